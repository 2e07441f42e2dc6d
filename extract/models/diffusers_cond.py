"""What each diffusers denoiser class takes besides x_t and t, how it is called, and where its
conditioning comes from (a registry keyed by the denoiser's class name; no branch on a model).

Conditioning is a dict of named tensors with a batch axis of 1, computed once per run:
- prompt_embeds (1, L, D) and pooled_prompt_embeds (1, P): from the folder's text encoder(s)
  and tokenizer(s) (the empty prompt by default), or read from a `--cond FILE` safetensors
  holding tensors of those names (for encoders that are absent or huge, e.g. SD3's T5);
- time_ids (1, 6) for SDXL's text_time embedding: original size, crop (0, 0), target size;
- resolution (1, 2) and aspect_ratio (1, 1) for PixArt where the model uses them;
- class_labels (1,) for class-conditional models: --class-label, else the null class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from extract.models.weights import file_sha256

TEXT = ("prompt_embeds", "pooled_prompt_embeds")
META_TEXT_LENGTH = 8  # prompt length of the meta-device forward (no map's shape depends on it)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _pixart_added(c: dict) -> dict:
    return {"resolution": c.get("resolution"), "aspect_ratio": c.get("aspect_ratio")}


def _unet_needs(cfg: dict) -> dict:
    needs = {"prompt_embeds": (None, _first(cfg.get("encoder_hid_dim") or cfg["cross_attention_dim"]))}
    if cfg.get("addition_embed_type") == "text_time":
        needs["pooled_prompt_embeds"] = (
            cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"],
        )
        needs["time_ids"] = (6,)
    return {**needs, **_class_needs(cfg)}


def _class_needs(cfg: dict) -> dict:
    return {"class_labels": ()} if cfg.get("num_class_embeds") and not cfg.get("class_embed_type") else {}


def _pixart_needs(cfg: dict) -> dict:
    needs = {"prompt_embeds": (None, cfg["caption_channels"])}
    extra = cfg.get("use_additional_conditions")
    if extra or (extra is None and _first(cfg.get("sample_size")) == 128):  # diffusers' own rule
        needs.update(resolution=(2,), aspect_ratio=(1,))
    return needs


def _transformer2d_needs(cfg: dict) -> dict:
    if cfg.get("norm_type") == "ada_norm_single":
        return _pixart_needs(cfg)
    return {"class_labels": ()} if cfg.get("num_embeds_ada_norm") else {}


@dataclass(frozen=True)
class Kind:
    call: Callable  # (denoiser, x_t (N, C, h, w), t (N,), cond {name: (N, ...)}) -> runs the forward
    needs: Callable  # config -> {name: shape without the batch axis} (None: the prompt's length)
    table: str  # regex of the module paths its numbered table lists
    tokens: bool = False  # block outputs are tokens on the patch grid
    null_class: Callable = lambda cfg: None  # config -> the label meaning "no class", if it has one
    # pooled embeddings come from the last text encoder's projection (SDXL)
    pooled_from_encoders: bool = False


UNET_TABLE = (
    r"^(down_blocks|up_blocks)\.\d+(\.(resnets|attentions)\.\d+)?$|^mid_block(\.(resnets|attentions)\.\d+)?$"
)
TRANSFORMER_TABLE = r"^transformer_blocks\.\d+$"

KINDS: dict[str, Kind] = {
    "UNet2DModel": Kind(
        lambda m, x, t, c: m(x, t, class_labels=c.get("class_labels"), return_dict=False),
        _class_needs,
        UNET_TABLE,
    ),
    "UNet2DConditionModel": Kind(
        lambda m, x, t, c: m(
            x,
            t,
            encoder_hidden_states=c["prompt_embeds"],
            class_labels=c.get("class_labels"),
            return_dict=False,
            added_cond_kwargs={"text_embeds": c["pooled_prompt_embeds"], "time_ids": c["time_ids"]}
            if "time_ids" in c
            else None,
        ),
        _unet_needs,
        UNET_TABLE,
        pooled_from_encoders=True,
    ),
    "DiTTransformer2DModel": Kind(
        lambda m, x, t, c: m(x, timestep=t, class_labels=c["class_labels"], return_dict=False),
        lambda cfg: {"class_labels": ()},
        TRANSFORMER_TABLE,
        True,
        lambda cfg: cfg.get("num_embeds_ada_norm", 1000),
    ),
    "Transformer2DModel": Kind(
        lambda m, x, t, c: m(
            x,
            timestep=t,
            class_labels=c.get("class_labels"),
            encoder_hidden_states=c.get("prompt_embeds"),
            return_dict=False,
            added_cond_kwargs=_pixart_added(c) if "prompt_embeds" in c else None,
        ),
        _transformer2d_needs,
        TRANSFORMER_TABLE,
        True,
        lambda cfg: cfg.get("num_embeds_ada_norm") if cfg.get("norm_type") != "ada_norm_single" else None,
    ),
    "PixArtTransformer2DModel": Kind(
        lambda m, x, t, c: m(
            x,
            encoder_hidden_states=c["prompt_embeds"],
            timestep=t,
            added_cond_kwargs=_pixart_added(c),
            return_dict=False,
        ),
        _pixart_needs,
        TRANSFORMER_TABLE,
        True,
    ),
    "SD3Transformer2DModel": Kind(
        lambda m, x, t, c: m(
            x,
            encoder_hidden_states=c["prompt_embeds"],
            pooled_projections=c["pooled_prompt_embeds"],
            timestep=t,
            return_dict=False,
        ),
        lambda cfg: {
            "prompt_embeds": (None, cfg["joint_attention_dim"]),
            "pooled_prompt_embeds": (cfg["pooled_projection_dim"],),
        },
        TRANSFORMER_TABLE,
        True,
    ),
}


def kind_of(denoiser_class: str) -> Kind:
    try:
        return KINDS[denoiser_class]
    except KeyError:
        raise ValueError(
            f"denoiser class {denoiser_class!r} is not supported; supported: {', '.join(KINDS)}"
        ) from None


def meta_condition(spec, batch: int, device) -> dict[str, torch.Tensor]:
    """Conditioning of the right shapes, empty (on the meta device: nothing allocated)."""
    out = {}
    for name, shape in kind_of(spec.denoiser_class).needs(spec.denoiser).items():
        shape = tuple(META_TEXT_LENGTH if s is None else s for s in shape)
        out[name] = torch.zeros(
            (batch, *shape), dtype=torch.long if name == "class_labels" else torch.float32, device=device
        )
    return out


def derived_condition(spec, needs: dict, class_label: int | None) -> dict[str, torch.Tensor]:
    """The conditioning that follows from the image size and the class label."""
    s = float(spec.image_size)
    made = {
        "time_ids": torch.tensor([[s, s, 0.0, 0.0, s, s]]),
        "resolution": torch.tensor([[s, s]]),
        "aspect_ratio": torch.tensor([[1.0]]),
    }
    out = {k: v for k, v in made.items() if k in needs}
    if "class_labels" in needs:
        out["class_labels"] = torch.tensor(
            [spec.null_class if class_label is None else class_label], dtype=torch.long
        )
    return out


def read_cond_file(path: Path, needs: dict) -> dict[str, torch.Tensor]:
    """The text conditioning from a safetensors file of named tensors, checked against the model's needs."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"--cond file not found: {path}")
    found = load_file(str(path))
    out = {}
    for name in (n for n in TEXT if n in needs):
        if name not in found:
            raise ValueError(
                f"--cond {path} lacks the tensor {name!r} (has {', '.join(sorted(found)) or 'none'}); "
                f"this model needs {', '.join(n for n in TEXT if n in needs)}"
            )
        value = found[name].float()
        value = value if value.dim() == len(needs[name]) + 1 else value.unsqueeze(0)
        if value.shape[0] != 1 or value.shape[-1] != needs[name][-1] or value.dim() != len(needs[name]) + 1:
            raise ValueError(
                f"--cond {path}: {name} has shape {tuple(found[name].shape)}, "
                f"the model needs (1, {', '.join('L' if s is None else str(s) for s in needs[name])})"
            )
        out[name] = value
    return out


ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")


def _class_of(lib, folder: Path, sub: str, index: dict, default: str):
    entry = index.get(sub) or [None, default]
    return getattr(lib, entry[1])


def encode_from_folder(
    libs, folder: Path, prompt: str, needs: dict, kind: Kind, index: dict, load: Callable
) -> tuple[dict, dict]:
    """prompt_embeds (and pooled_prompt_embeds) from the folder's text encoders and tokenizers.
    One encoder: its last hidden states. Several (SDXL): each one's penultimate hidden states,
    concatenated, and the last encoder's projected pooled output. `load(cls, folder, sub)`
    returns (module, weights record)."""
    subs = [(e, t) for e, t in zip(ENCODERS, TOKENIZERS) if (folder / e / "config.json").is_file()]
    pooled = "pooled_prompt_embeds" in needs
    if not subs or (pooled and not kind.pooled_from_encoders):
        raise ValueError(
            f"{folder}: the denoiser needs {', '.join(n for n in TEXT if n in needs)}: give --cond FILE "
            "(a safetensors file with tensors of those names)"
            f"{'' if subs else ' or put text_encoder/ and tokenizer/ in the folder'}"
        )
    hidden, records, out = [], {}, {}
    for enc_sub, tok_sub in subs:
        encoder, records[enc_sub] = load(
            _class_of(libs.transformers, folder, enc_sub, index, "CLIPTextModel"), folder, enc_sub
        )
        tokenizer = _class_of(libs.transformers, folder, tok_sub, index, "AutoTokenizer").from_pretrained(
            folder, subfolder=tok_sub, local_files_only=True
        )
        records[tok_sub] = {
            f.name: file_sha256(f) for f in sorted((folder / tok_sub).iterdir()) if f.is_file()
        }
        length = (
            tokenizer.model_max_length if tokenizer.model_max_length <= 512 else 120
        )  # T5's is unbounded; PixArt's pipeline uses 120
        ids = tokenizer(
            prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.inference_mode():
            result = encoder(ids, output_hidden_states=len(subs) > 1)
        hidden.append(result.hidden_states[-2] if len(subs) > 1 else result[0])
        if pooled:
            out["pooled_prompt_embeds"] = result[0].float()
    out["prompt_embeds"] = torch.cat(hidden, dim=-1).float()
    return out, records


def condition(
    spec,
    libs,
    folder: Path | None,
    prompt: str,
    class_label: int | None,
    cond_file: Path | None,
    load: Callable,
    index: dict,
) -> tuple[dict, dict, dict]:
    """(cond {name: (1, ...)}, weights records of what made it, the store key's "conditioning")."""
    kind = kind_of(spec.denoiser_class)
    needs = kind.needs(spec.denoiser)
    if "class_labels" in needs and class_label is None and spec.null_class is None:
        raise ValueError(
            f"{spec.denoiser_class} is class-conditional and has no null class: give --class-label"
        )
    cond = derived_condition(spec, needs, class_label)
    key: dict = {"class_label": int(cond["class_labels"][0])} if "class_labels" in cond else {}
    text = [n for n in TEXT if n in needs]
    if not text:
        if prompt or cond_file:
            raise ValueError(f"{spec.denoiser_class} takes no text: leave out --prompt and --cond")
        return cond, {}, key
    if cond_file is not None:
        if prompt:
            raise ValueError("--cond FILE holds the prompt's embeddings already: leave out --prompt")
        cond.update(read_cond_file(cond_file, needs))
        digest = file_sha256(cond_file)
        return (
            cond,
            {"cond": {"file": Path(cond_file).name, "sha256": digest}},
            {**key, "cond_sha256": digest},
        )
    if folder is None:
        raise ValueError(f"{spec.name} needs --model-dir DIR with its text encoders, or --cond FILE")
    made, records = encode_from_folder(libs, folder, prompt, needs, kind, index, load)
    cond.update(made)
    return cond, records, {**key, "prompt": prompt}
