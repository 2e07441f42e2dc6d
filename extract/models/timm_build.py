"""timm networks for the timm family: built by timm (`pretrained=False`: timm never downloads
here), weights from a local file or Hugging Face folder checked key by key, the preprocessing
of the model's pretrained config, the block table from `feature_info`, and block outputs by
`forward_intermediates` stopped after the deepest block asked for."""

from __future__ import annotations

import difflib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from extract.models.timm_options import PREFIX, TimmSpec
from extract.models.weights import CheckpointError, fit_of, read_state_dict, weights_record

# weight files a Hugging Face folder may hold, the first found wins
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm():
    import timm

    return timm


def check_name(name: str) -> None:
    """An unknown architecture or pretrained tag is one line naming the nearest known ones."""
    timm = _timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        near = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + n for n in near)}?" if near else ""
        raise ValueError(f"unknown timm model {name!r}{hint} (all: timm.list_models())")
    known = timm.list_pretrained(f"{arch}.*")
    if tag and name not in known:
        tags = [t.partition(".")[2] for t in known]
        raise ValueError(
            f"timm model {arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}"
        )


def build(spec: TimmSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The architecture with timm's own initialisation (seed it first), in eval mode; on the
    meta device no weights are allocated."""
    check_name(spec.name)
    try:
        with torch.device(device):
            model = _timm().create_model(spec.name, pretrained=False, **spec.kwargs)
    except TypeError as e:
        raise ValueError(f"timm model {spec.name} does not take these --model-arg values: {e}") from None
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"timm model {spec.name} has no forward_intermediates; choose one that has")
    return model.eval()


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: timm's eval transform from the pretrained
    config (resize the short side to size / crop_pct, center crop, mean/std)."""

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str

    def record(self) -> dict:
        return {
            "transform": "timm eval: short side to size/crop_pct, center crop, to [0, 1], (x-mean)/std",
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }

    def transform(self):
        return _timm().data.create_transform(**self.record_args(), is_training=False)

    def record_args(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def preprocessing(model: nn.Module, spec: TimmSpec) -> Preprocessing:
    """The pretrained config's preprocessing; an `img_size` model argument sets the input size."""
    cfg = _timm().data.resolve_model_data_config(model)
    size = tuple(cfg["input_size"])
    given = spec.kwargs.get("img_size")
    if given is not None:
        h, w = (given, given) if isinstance(given, int) else tuple(given)
        size = (size[0], int(h), int(w))
    if size[0] != 3 or len(cfg["mean"]) != 3:
        raise ValueError(f"timm model {spec.name}: only 3-channel (RGB) inputs are supported")
    return Preprocessing(
        size,
        str(cfg["interpolation"]),
        tuple(float(v) for v in cfg["mean"]),
        tuple(float(v) for v in cfg["std"]),
        float(cfg["crop_pct"]),
        str(cfg.get("crop_mode", "center")),
    )


# ---------------------------------------------------------------- weights
def _snapshot(repo: Path) -> Path | None:
    """A hub cache repo folder (models--org--name) -> its snapshot of refs/main, or its only one."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        return repo / "snapshots" / ref.read_text().strip()
    found = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return found[0] if len(found) == 1 else None


def weights_file(path: Path, hub_id: str | None) -> Path:
    """A weights file, or the one in a Hugging Face folder: a snapshot (model.safetensors or
    pytorch_model.bin), a hub cache repo (models--timm--NAME) or a hub cache root holding the
    model's repo (the pretrained config's hf_hub_id)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    folders = [path]
    if (path / "snapshots").is_dir():
        folders.append(_snapshot(path))
    if hub_id:
        repo = path / ("models--" + hub_id.replace("/", "--"))
        if repo.is_dir():
            folders.append(_snapshot(repo))
    for folder in filter(None, folders):
        for name in HF_FILES:
            if (folder / name).is_file():
                return folder / name
    where = f" or models--{hub_id.replace('/', '--')}/snapshots/*/" if hub_id else ""
    raise FileNotFoundError(f"{path}: no {' or '.join(HF_FILES)} in it{where}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict: safetensors (no code runs), or torch with weights-only unpickling."""
    if path.suffix != ".safetensors":
        return read_state_dict(path)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one clear error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({first})") from None


def load_weights(model: nn.Module, spec: TimmSpec, ckpt: Path | None, random_init: bool, seed: int) -> dict:
    """Load --ckpt into the model (built under `seed` already) or keep its random init; returns
    the weights record. Neither given: refused, since that would need a download."""
    if ckpt is not None and random_init:
        raise ValueError("give --ckpt or --random-init, not both")
    if ckpt is None:
        if not random_init:
            raise ValueError(
                f"timm:{spec.name} needs local weights: --ckpt FILE_OR_HF_FOLDER (nothing is downloaded), "
                "or --random-init for a random control"
            )
        return {**weights_record(None, random_init=True, seed=seed), "control": "random weights"}
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    path = weights_file(Path(ckpt), hub_id)
    state = read_weights(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fit = fit_of({k: tuple(v.shape) for k, v in state.items()}, expected)
    converted = False
    if not fit.ok:
        # timm's own conversion for this architecture, as its pretrained loading applies it: e.g. a
        # ViT's position embedding resampled to another img_size, or an original release's key names
        adapted = _filtered(state, model)
        if adapted is not None and fit_of({k: tuple(v.shape) for k, v in adapted.items()}, expected).ok:
            state, converted = adapted, True
    if not converted and not fit.ok:
        raise CheckpointError(f"{path} does not fit timm:{spec.name}: {fit.describe()}")
    model.load_state_dict(state, strict=True)
    record = weights_record(path)
    return {**record, "converted": "timm checkpoint_filter_fn"} if converted else record


def _filtered(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The state after the architecture module's checkpoint_filter_fn, or None (none, or it failed)."""
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is None:
        return None
    try:
        out = convert(dict(state), model)
    except Exception:  # noqa: BLE001 - a state it cannot convert: the fit report says why
        return None
    return out if isinstance(out, dict) else None


# ---------------------------------------------------------------- blocks
@dataclass(frozen=True)
class BlockRow:
    """One row of `extract blocks` (the columns every family's table has)."""

    b: int
    module: str
    layers: str  # the module's type and its stride (feature_info's reduction)
    channels: int
    height: int
    width: int

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width


def feature_modules(model: nn.Module) -> list[dict]:
    """timm's feature_info as a list of {module, num_chs, reduction}, index i = block b = i + 1."""
    info = model.feature_info
    return list(info.get_dicts()) if hasattr(info, "get_dicts") else list(info)


def resolve_blocks(model: nn.Module, spec: TimmSpec, wanted: tuple[int | str, ...]) -> tuple[int, ...]:
    """-b words -> sorted 1-based blocks: numbers, 'all' (also the default) or module names."""
    modules = [d["module"] for d in feature_modules(model)]
    if not wanted or "all" in wanted:
        return tuple(range(1, len(modules) + 1))
    out = set()
    for w in wanted:
        if isinstance(w, str):
            if w not in modules:
                raise ValueError(
                    f"timm:{spec.name} has no feature module {w!r}; its blocks: {', '.join(modules)}"
                )
            out.add(modules.index(w) + 1)
        elif not 1 <= w <= len(modules):
            raise ValueError(f"block {w} is outside 1..{len(modules)} for timm:{spec.name}")
        else:
            out.add(w)
    return tuple(sorted(out))


def has_class_token(model: nn.Module) -> bool:
    return (
        getattr(model, "cls_token", None) is not None
        and "return_prefix_tokens" in inspect.signature(model.forward_intermediates).parameters
    )


def capture(
    model: nn.Module, x: torch.Tensor, blocks: tuple[int, ...], tokens: str
) -> dict[int, torch.Tensor]:
    """x (N, 3, H, W), normalised -> b -> (N, C, h, w) for each b in `blocks` (sorted, 1-based),
    by forward_intermediates stopped after the deepest. tokens: 'grid' the patch grid (a CNN's
    map), 'mean' its mean over h, w as (N, C, 1, 1), 'cls' the class token as (N, C, 1, 1)."""
    kwargs = {"return_prefix_tokens": True} if tokens == "cls" else {}
    with torch.inference_mode():
        outs = model.forward_intermediates(
            x,
            indices=[b - 1 for b in blocks],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NCHW",
            **kwargs,
        )
    maps = {}
    for b, out in zip(blocks, outs):
        if tokens == "cls":
            maps[b] = out[1][:, 0, :, None, None]  # prefix tokens (N, P, C): the class token first
        elif tokens == "mean":
            maps[b] = out.mean(dim=(2, 3), keepdim=True)
        else:
            maps[b] = out
    return maps


def block_table(spec: TimmSpec) -> list[BlockRow]:
    """Every block's feature module, type and stride, and its output map at the input size,
    from a forward on the meta device (no weights)."""
    model = build(spec, "meta")
    size = preprocessing(model, spec).input_size
    modules = feature_modules(model)
    blocks = tuple(range(1, len(modules) + 1))
    maps = capture(model, torch.empty(1, *size, device="meta"), blocks, "grid")
    return [
        BlockRow(
            b,
            d["module"],
            f"{type(model.get_submodule(d['module'])).__name__}, stride {d['reduction']}",
            *maps[b].shape[1:],
        )
        for b, d in zip(blocks, modules)
    ]
