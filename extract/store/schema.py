"""The cache schema: the only code that knows how a diffprobe store is laid out.

This module and `extract.store.cli_options` are the floor every stage stands on: they import
numpy and zarr, never torch or guided_diffusion, so probe and analysis can read stores (and
analysis can run) without loading a model. Here live the store layout, what makes stores
compatible, and (re-exported) the feature key (`extract.store.feature_key`: its one parser and
one label) and the errors all stages share.

A store is one Zarr v3 group:

    <store>/                          attrs: format, schema_version, key, provenance, arrays,
                                             complete, skipped, last_run
      features/t{t}/b{b}/p{p}         (N, C, p, p) or, with views V > 1, (N, V, C, p, p)
      features/t{t}/b{b}/full         (N, C, H, W)  (pool 'full')
      labels   int64 (N,)             class index per row
      ids      str   (N,)             image id (path relative to the dataset root, ...)
      index    int64 (N,)             row -> position in the source dataset (noise is keyed by it)
      valid    uint8 (N,)             0 for an image skipped as unreadable (its features are NaN)
      content  uint8 (N, 16)          BLAKE2b-128 of each image's decoded pixels (all zero: not
                                      recorded; absent in stores made before it existed)
      progress/done  uint8 (n_shards,)  1 once every array's rows of shard s are written

Rows are grouped in shards of `shard_rows`; a shard is the unit of work, of writing and of
resume. Feature arrays use Zarr sharding (one shard file per row-shard, inner chunks of a
few MiB) with a CRC32C codec on every chunk and no compression, so a corrupt chunk raises
on read and rows are read straight from the shard files (`extract.store.shard_read`). Unwritten
feature rows read as NaN. The store is complete only when every done flag is 1 and then
`complete` is set in the root attrs, last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

# re-exported: the errors every stage shares, the one-writer lock and the feature key's one
# spelling are importable from here as before
from extract.store.errors import DataError, StoreError  # noqa: F401
from extract.store.feature_key import FULL, FeatureKey, feature_set_label, parse_feature_set  # noqa: F401
from extract.store.feature_key import parse_pool, pool_label  # noqa: F401
from extract.store.location import Location, StoreURL, delete_object, delete_tree, require, store_location
from extract.store.location import exists as location_exists
from extract.store.location import size_bytes as location_size
from extract.store.location import zarr_store
from extract.store.lock import StoreLock  # noqa: F401
from extract.store.shard_read import FeatureArray

FORMAT = "diffprobe-features"
SCHEMA_VERSION = 1
CHUNK_BYTES = 4 << 20  # target size of one inner chunk


def feature_codecs() -> list:
    """Codecs inside each shard of a feature array: a CRC32C per chunk, no compression.

    Dense activations compress by about a third with zstd, but decoding then runs at a
    fraction of the disk's speed (BENCHMARKS.md, `make bench-io`); the CRC keeps a corrupt
    chunk from reading as features. Stores written with zstd (before this) still read."""
    return [Crc32cCodec()]


STORE_DTYPES = ("float16", "float32")

_LABELS, _IDS, _INDEX, _VALID, _DONE = ("labels", "ids", "index", "valid", "progress/done")
_CONTENT, CONTENT_BYTES = "content", 16
# how a store's preprocessing record and messages name an image's channels
CHANNEL_WORDS = {1: "grayscale", 3: "RGB"}


# ---------------------------------------------------------------- compatibility
# key fields that must agree between stores probed or compared together (they change what a
# feature means); a store records its own list as attrs["compatible"], older ones use this one
COMPATIBLE_FIELDS = (
    "model",
    "weights",
    "preprocessing",
    "dtype",
    "class_label",
    "micro_batch",
    "device_type",
)
# of those, the fields that move values by float rounding only (kernels round by batch shape and by
# device), not by meaning: stores differing only in them are used together, with a warning
ROUNDING_FIELDS = ("micro_batch", "device_type")


def describe_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'field: store has X, asked Y' for every leaf where two key dicts differ."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += describe_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: store has {a!r}, asked {b!r}")
    return diffs


def chunk_rows_for(row_bytes: int, shard_rows: int) -> int:
    """The largest divisor of shard_rows whose chunk stays within CHUNK_BYTES (at least 1)."""
    best = 1
    for rows in range(1, shard_rows + 1):
        if shard_rows % rows == 0 and rows * row_bytes <= CHUNK_BYTES:
            best = rows
    return best


def is_store(path: str | Path | StoreURL, created: bool = True) -> bool:
    """A diffprobe store; with created=False, also one whose creation was interrupted."""
    try:
        attrs = zarr.open_group(store=zarr_store(store_location(path), read_only=True), mode="r").attrs
    except Exception:  # noqa: BLE001 - anything unreadable is not a store
        return False
    return attrs.get("format") == FORMAT and (attrs.get("created", False) or not created)


def open_complete(path: str | Path | StoreURL) -> FeatureStore:
    """A store that exists and whose extraction finished (what probe and analysis read)."""
    store = FeatureStore.open(path)
    if not store.complete:
        raise StoreError(
            f"{path} is not complete (an extraction is unfinished); "
            "finish it with `python -m extract run` first"
        )
    return store


def _differences(a: FeatureStore, b: FeatureStore, rounding: bool) -> list[str]:
    fields = [
        f
        for f in dict.fromkeys(a.compatible_fields() + b.compatible_fields())
        if (f in ROUNDING_FIELDS) == rounding
    ]
    ka, kb = a.attrs.get("key", {}), b.attrs.get("key", {})
    return describe_differences({k: ka.get(k) for k in fields}, {k: kb.get(k) for k in fields})


def incompatibility(a: FeatureStore, b: FeatureStore) -> list[str]:
    """Why features of two stores cannot be used together (empty: they can): differences in the
    fields each store's kind declared as meaning (model, weights, preprocessing, dtype, class
    label), not in those that move values by rounding only (`rounding_differences`)."""
    return _differences(a, b, rounding=False)


def rounding_differences(a: FeatureStore, b: FeatureStore) -> list[str]:
    """Differences between two stores in micro-batch or device type: their features agree up to
    float rounding (about 1e-3 relative in fp16), so they may be used together, with a warning."""
    return _differences(a, b, rounding=True)


class FeatureStore:
    """Read and write access to one store. Create with `create`, open with `open`."""

    def __init__(self, group: zarr.Group, path: Location):
        self.group, self.path = group, path
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{path} is not a diffprobe feature store")
        if not attrs.get("created"):
            raise StoreError(f"{path} is an unfinished store (its creation was interrupted)")
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {attrs.get('schema_version')}; "
                f"this diffprobe reads {SCHEMA_VERSION}"
            )
        self.layout = attrs["layout"]

    # ------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path | StoreURL,
        *,
        row_shapes: dict[FeatureKey, tuple[int, ...]],
        ids: list[str],
        labels: np.ndarray,
        index: np.ndarray,
        shard_rows: int,
        views: int,
        dtype: str,
        attrs: dict,
    ) -> FeatureStore:
        """A new, empty, incomplete store. row_shapes: key -> (C, h, w) of one row and view."""
        if dtype not in STORE_DTYPES:
            raise ValueError(f"store dtype must be one of {STORE_DTYPES}, got {dtype!r}")
        path = store_location(path)
        n = len(ids)
        n_shards = max(1, -(-n // shard_rows))
        # the identity goes in first (an interrupted creation is recognisable and replaceable);
        # `created` is set once every array exists, `complete` once every shard is written
        group = zarr.open_group(
            store=zarr_store(path, read_only=False),
            mode="w",
            attributes={
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "created": False,
                "complete": False,
            },
        )
        itemsize = np.dtype(dtype).itemsize
        arrays = []
        for key, shape in sorted(row_shapes.items(), key=lambda kv: kv[0].sort_key()):
            row = ((views,) if views > 1 else ()) + tuple(shape)
            rows = chunk_rows_for(int(np.prod(row)) * itemsize, shard_rows)
            group.create_array(
                key.path,
                shape=(n, *row),
                dtype=dtype,
                chunks=(rows, *row),
                shards=(shard_rows, *row),
                compressors=feature_codecs(),
                fill_value=float("nan"),
            )
            arrays.append({**key.to_dict(), "shape": [n, *row], "chunk_rows": rows})
        group.create_array(_LABELS, data=np.asarray(labels, dtype=np.int64), compressors=[Crc32cCodec()])
        group.create_array(_INDEX, data=np.asarray(index, dtype=np.int64), compressors=[Crc32cCodec()])
        id_array = group.create_array(_IDS, shape=(n,), dtype=str, chunks=(max(n, 1),))
        id_array[:] = np.asarray(ids, dtype=object)
        # valid and done are written per shard by that shard's owner: one chunk per shard
        group.create_array(_VALID, shape=(n,), dtype="uint8", chunks=(shard_rows,), fill_value=0)
        group.create_array(
            _CONTENT,
            shape=(n, CONTENT_BYTES),
            dtype="uint8",
            chunks=(shard_rows, CONTENT_BYTES),
            fill_value=0,
        )
        group.create_array(_DONE, shape=(n_shards,), dtype="uint8", chunks=(1,), fill_value=0)
        group.attrs.update(
            {
                **attrs,
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "layout": {
                    "rows": n,
                    "shard_rows": shard_rows,
                    "n_shards": n_shards,
                    "views": views,
                    "dtype": dtype,
                },
                "arrays": arrays,
                "created": True,
            }
        )
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path | StoreURL, mode: str = "r") -> FeatureStore:
        path = store_location(path)
        require(path)
        try:
            group = zarr.open_group(store=zarr_store(path, read_only=mode == "r"), mode=mode)
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{path} is not a readable Zarr store ({e})") from None
        return cls(group, path)

    @staticmethod
    def remove(path: str | Path | StoreURL) -> None:
        """Delete a store (a folder, or every object under a URL); refuses anything that is not a
        diffprobe store."""
        path = store_location(path)
        if not location_exists(path):
            return
        if not is_store(path, created=False):
            raise StoreError(f"refusing to delete {path}: it is not a diffprobe store")
        delete_tree(path)

    # ------------------------------------------------------------ reading
    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def n_rows(self) -> int:
        return int(self.layout["rows"])

    @property
    def n_shards(self) -> int:
        return int(self.layout["n_shards"])

    @property
    def views(self) -> int:
        return int(self.layout["views"])

    def shard_rows(self, s: int) -> range:
        size = int(self.layout["shard_rows"])
        return range(s * size, min((s + 1) * size, self.n_rows))

    def keys(self) -> list[FeatureKey]:
        return [FeatureKey.from_dict(a) for a in self.attrs["arrays"]]

    def array(self, key: FeatureKey) -> FeatureArray:
        """The key's features for reading: `shape`, `dtype` and row slices (read from the shard files)."""
        if key not in self.keys():
            held = ", ".join(str(k) for k in self.keys())
            raise StoreError(f"{self.path} has no features for {key}; it holds: {held}")
        return FeatureArray(self.group[key.path])

    def labels(self) -> np.ndarray:
        return self.group[_LABELS][:]

    def classes(self) -> list[str]:
        """Class identifiers in label order (synsets, folder names), as the extract stage recorded them."""
        return list(self.attrs.get("provenance", {}).get("dataset", {}).get("classes", []))

    def class_names(self) -> list[str]:
        """Readable class names in label order (the identifiers where the dataset has no names)."""
        dataset = self.attrs.get("provenance", {}).get("dataset", {})
        return list(dataset.get("class_names") or dataset.get("classes", []))

    def ids(self) -> np.ndarray:
        return self.group[_IDS][:]

    def index(self) -> np.ndarray:
        return self.group[_INDEX][:]

    def valid(self) -> np.ndarray:
        return self.group[_VALID][:].astype(bool)

    def log_snrs(self) -> dict[int, float | None]:
        """t -> the log-SNR the model saw at t, as the store's key records it (None: infinite)."""
        levels = self.attrs.get("key", {}).get("noise_levels")
        if not levels:
            raise StoreError(
                f"{self.path} records no noise levels (made by an older version, or by a model that "
                "sees no noise): re-extract it, or plot against t"
            )
        return {int(t): v["log_snr"] for t, v in levels.items()}

    def content_hashes(self) -> np.ndarray | None:
        """(N, 16) uint8 digests of the images' pixels; a zero row was not recorded. None for a
        store made before content hashes were recorded."""
        return self.group[_CONTENT][:] if _CONTENT in self.group else None

    def done_shards(self) -> np.ndarray:
        """Which shards are fully written. A marker that cannot be read counts as not done."""
        done = self.group[_DONE]
        try:
            return done[:].astype(bool)
        except Exception:  # noqa: BLE001 - a torn marker file from a killed run
            out = np.zeros(self.n_shards, dtype=bool)
            for s in range(self.n_shards):
                try:
                    out[s] = bool(done[s])
                except Exception:  # noqa: BLE001
                    pass
            return out

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete")) and bool(self.done_shards().all())

    def compatible_fields(self) -> tuple[str, ...]:
        """The key fields this store's kind declared as defining what its features mean."""
        return tuple(self.attrs.get("compatible", COMPATIBLE_FIELDS))

    def compatibility_key(self) -> dict:
        key = self.attrs.get("key", {})
        return {k: key.get(k) for k in self.compatible_fields()}

    # ------------------------------------------------------------ writing
    def write_shard(
        self,
        s: int,
        features: dict[FeatureKey, np.ndarray],
        valid: np.ndarray,
        content: np.ndarray | None = None,
    ) -> None:
        """Write every array's rows of shard s, then mark it done (the marker comes last).
        `content`: the rows' (n, 16) pixel digests, where the writer has the images."""
        for key, values in features.items():
            self._write_rows(self.group[key.path], s, values)
        self._write_rows(self.group[_VALID], s, valid.astype(np.uint8))
        if content is not None and _CONTENT in self.group:
            self._write_rows(self.group[_CONTENT], s, content)
        self.group[_DONE][s] = 1

    def _write_rows(self, array: zarr.Array, s: int, values: np.ndarray) -> None:
        """Write shard s's rows of one array after deleting what it held there.

        zarr writes into a shard read-modify-write: it reads the old shard file and its index
        back, and decodes every inner chunk the write does not cover whole. The last shard,
        when partial, ends past the array's end, so its rows never cover it whole; a corrupt or
        torn old file (what a repair or a resume rewrites) then raises on its checksum and the
        shard could never be rewritten. Its owner (this writer; its done marker is 0 meanwhile,
        so nothing counts the shard as written) deletes it first (one file, or one object at a
        URL), and zarr has nothing to read."""
        grid = array.shards or array.chunks  # one stored object per row-shard in every store `create` makes
        if grid[0] == int(self.layout["shard_rows"]):
            chunk = (s,) + (0,) * (array.ndim - 1)
            delete_object(self.path, f"{array.path}/{array.metadata.encode_chunk_key(chunk)}")
        rows = self.shard_rows(s)
        array[rows.start : rows.stop] = values

    def finish(self, extra_attrs: dict) -> None:
        """Set the completion flag (last), once every shard is done."""
        missing = np.flatnonzero(~self.done_shards())
        if missing.size:
            raise StoreError(f"{self.path}: cannot finish, shards not written: {missing[:10].tolist()}")
        self.group.attrs.update({**extra_attrs, "complete": True})

    def mark_incomplete(self) -> None:
        self.group.attrs["complete"] = False

    def size_bytes(self) -> int:
        return location_size(self.path)
