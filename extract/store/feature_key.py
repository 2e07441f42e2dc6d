"""The feature key: which cached array (timestep t, block b, pool p), its one label and its one
parser, the spelling every command accepts and prints."""

from __future__ import annotations

from dataclasses import dataclass

# the store's group that holds every feature array, one per key label
FEATURES_GROUP = "features"
FULL = "full"  # the one spelling of "no pooling": keep the block's whole H x W map


def parse_pool(text: str | int | None) -> int | None:
    """'2' -> 2; 'full' -> None (the whole map). 'none', the spelling of older versions, is read as 'full'."""
    if text is None or (isinstance(text, str) and text.strip().lower() in (FULL, "none")):
        return None
    try:
        p = int(text)
    except ValueError:
        raise ValueError(f"pool must be a positive integer or '{FULL}', got {text!r}") from None
    if p < 1:
        raise ValueError(f"pool must be a positive integer or '{FULL}', got {text!r}")
    return p


def pool_label(p: int | None) -> str:
    return FULL if p is None else str(p)


@dataclass(frozen=True)
class FeatureKey:
    """One cached array: timestep t, block b, pool p (None = the full map).

    Its label, `t150/b24/p2` or `t150/b24/full`, is the array's path under features/ in the
    store, and the one spelling every command accepts and prints (feature sets join labels
    with '+')."""

    t: int
    b: int
    pool: int | None

    @property
    def label(self) -> str:
        return f"t{self.t}/b{self.b}/{FULL if self.pool is None else f'p{self.pool}'}"

    @property
    def path(self) -> str:
        return f"{FEATURES_GROUP}/{self.label}"

    @classmethod
    def parse(cls, text: str) -> FeatureKey:
        """'t150/b24/p2' or 't150/b24/full' -> FeatureKey (the inverse of `label`)."""
        parts = text.strip().lower().split("/")
        try:
            t, b, p = parts
            if not (t[0] == "t" and b[0] == "b" and (p in (FULL, "pnone") or p[0] == "p")):
                raise ValueError
            return cls(int(t[1:]), int(b[1:]), None if p in (FULL, "pnone") else int(p[1:]))
        except (ValueError, IndexError):
            raise ValueError(
                f"feature {text!r}: expected tT/bB/pP or tT/bB/{FULL}, e.g. t150/b24/p2"
            ) from None

    def to_dict(self) -> dict:
        return {"t": self.t, "b": self.b, "pool": self.pool}

    def sort_key(self) -> tuple[int, int, int]:
        return self.t, self.b, -1 if self.pool is None else self.pool

    @classmethod
    def from_dict(cls, d: dict) -> FeatureKey:
        return cls(int(d["t"]), int(d["b"]), None if d["pool"] is None else int(d["pool"]))

    def __str__(self) -> str:
        return self.label


def feature_set_label(keys) -> str:
    """Keys whose features are concatenated: 't10/b7/p2+t50/b7/p2'."""
    return "+".join(k.label for k in keys)


def parse_feature_set(text: str) -> tuple[FeatureKey, ...]:
    return tuple(FeatureKey.parse(part) for part in text.split("+"))
