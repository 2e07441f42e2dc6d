"""Any diffusers denoiser (UNet2DModel, UNet2DConditionModel, DiT, PixArt, SD3): its numbered
block table, the capture of any named module, and the whole model loaded from a local folder.

The table lists modules at the granularity of the denoiser class's registry row (U-Nets: every
resnet, attention, down/mid/up block; transformers: every transformer block), numbered in the
order their outputs are produced, found by a forward on the meta device with a hook on every
module. Modules asked for by name outside the table are numbered after it. Capture hooks the
requested modules and stops the forward right after the one that runs last
(extract.models.adm_blocks.hooked_forward, keyed by that forward order). A module's output
becomes a map (N, C, H, W): the first tensor of its output that is a map, or tokens (N, L, D)
on a square grid (transformers: their patch grid); anything else is an error naming it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from extract.models.adm_blocks import BlockInfo, hooked_forward
from extract.models.diffusers_cond import condition, kind_of, meta_condition
from extract.models.diffusers_spec import DiffusersSpec, denoiser_folder, with_blocks
from extract.models.latent import _seeded, encode_latents, libraries
from extract.models.latent_files import from_folder
from extract.models.noise import alphas_cumprod
from extract.models.schedules import NoiseSchedule, schedule_from_record


def build_denoiser(spec: DiffusersSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The denoiser from its config with diffusers' own init (on `meta`: nothing allocated)."""
    kind_of(spec.denoiser_class)
    cls = getattr(libraries().diffusers, spec.denoiser_class)
    with torch.device(device):
        return cls.from_config(dict(spec.denoiser)).eval()


def patch_tokens(spec: DiffusersSpec) -> int | None:
    """How many tokens a transformer's patch grid has (None for U-Nets: any square count)."""
    if not kind_of(spec.denoiser_class).tokens:
        return None
    side = spec.latent_size // int(spec.denoiser.get("patch_size") or 1)
    return side * side


def _tensors(output) -> list:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    return []


def to_map(output, tokens: int | None, name: str) -> torch.Tensor:
    """A module's output as (N, C, H, W); tokens (N, L, D) laid out row-major on their square grid."""
    found = _tensors(output)
    for v in found:
        if v.dim() == 4:
            return v
        side = math.isqrt(v.shape[1]) if v.dim() == 3 else 0
        if v.dim() == 3 and side * side == v.shape[1] and (tokens is None or v.shape[1] == tokens):
            return v.transpose(1, 2).reshape(v.shape[0], v.shape[2], side, side)
    shapes = ", ".join(str(tuple(v.shape)) for v in found) or type(output).__name__
    grid = (
        f"tokens on the {math.isqrt(tokens)}x{math.isqrt(tokens)} patch grid"
        if tokens
        else "tokens on a square grid"
    )
    raise ValueError(
        f"module {name!r}: its output ({shapes}) is neither a map (N, C, H, W) nor {grid}; "
        "choose another module (see `extract blocks`)"
    )


def meta_inputs(spec: DiffusersSpec, batch: int = 1, device: str | torch.device = "meta"):
    s = spec.latent_size
    x = torch.zeros(batch, int(spec.denoiser.get("in_channels", 4)), s, s, device=device)
    return x, torch.zeros(batch, dtype=torch.long, device=device), meta_condition(spec, batch, device)


def forward_order(model: nn.Module, spec: DiffusersSpec) -> tuple[list[str], dict]:
    """Every module that runs, in the order its output is first produced, and those outputs (meta)."""
    order, outputs = [], {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            if name not in outputs:
                order.append(name)
                outputs[name] = output

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if n]
    try:
        kind_of(spec.denoiser_class).call(model, *meta_inputs(spec))
    finally:
        for h in handles:
            h.remove()
    return order, outputs


def _unknown(name: str, known: list[str], spec: DiffusersSpec) -> ValueError:
    close = [n for n in known if n.startswith(name.rsplit(".", 1)[0])][:6] or known[:6]
    return ValueError(
        f"unknown module {name!r} of {spec.denoiser_class}; valid names include {', '.join(close)} "
        "(`extract blocks` lists the numbered ones)"
    )


def resolve_table(spec: DiffusersSpec, names=()) -> tuple[DiffusersSpec, list[BlockInfo]]:
    """The spec with its block numbering (the table, then `names` outside it in forward order),
    and every block's map shape, from one forward on the meta device."""
    kind = kind_of(spec.denoiser_class)
    model = build_denoiser(spec, "meta")
    order, outputs = forward_order(model, spec)
    rank = {n: i for i, n in enumerate(order)}
    table = [n for n in order if re.match(kind.table, n)]
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise _unknown(name, table, spec)
        if name not in rank:
            raise ValueError(
                f"module {name!r} of {spec.denoiser_class} does not run in its forward "
                "(with this conditioning); choose another"
            )
    extra = sorted({n for n in names if n not in table}, key=rank.get)
    all_names = table + extra
    null = kind.null_class(spec.denoiser)
    spec = with_blocks(
        spec,
        tuple(all_names),
        len(table),
        table[len(table) // 2] if table else "",
        null,
        "class_labels" in meta_condition(spec, 1, "meta"),
    )
    spec = replace(spec, block_ranks=tuple(rank[n] for n in all_names))
    tokens = patch_tokens(spec)
    infos = [
        BlockInfo(b, n, type(modules[n]).__name__, *to_map(outputs[n], tokens, n).shape[1:])
        for b, n in enumerate(all_names, start=1)
    ]
    return spec, infos


def capture(
    model: nn.Module,
    spec: DiffusersSpec,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: dict,
    blocks,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Block b -> (N, C_b, H_b, W_b), the forward stopped after the requested module that runs last."""
    by_rank = {spec.block_ranks[b - 1]: b for b in set(blocks)}
    modules = {r: model.get_submodule(spec.block_names[b - 1]) for r, b in by_rank.items()}
    call = kind_of(spec.denoiser_class).call
    raw = hooked_forward(modules, list(modules), lambda: call(model, x_t, t, cond), stop_early=stop_early)
    tokens = patch_tokens(spec)
    return {b: to_map(raw[r], tokens, spec.block_names[b - 1]) for r, b in by_rank.items()}


# ---------------------------------------------------------------- the whole model
def read_schedule(spec: DiffusersSpec, folder: Path | None) -> dict:
    """The folder's scheduler config (scheduler/, or beside a denoiser-only folder's config), else
    DDPM's defaults."""
    paths = (
        [folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"] if folder else []
    )
    path = next((p for p in paths if p.is_file()), None)
    cfg = json.loads(path.read_text()) if path else {}
    flow = cfg.get("_class_name", "").startswith("FlowMatch")
    return {
        "source": str(path.relative_to(folder)) if path else "defaults",
        "kind": "flow" if flow else "ddpm",
        "beta_schedule": cfg.get("beta_schedule", spec.beta_schedule),
        "beta_start": cfg.get("beta_start", spec.beta_start),
        "beta_end": cfg.get("beta_end", spec.beta_end),
        "steps": cfg.get("num_train_timesteps", spec.diffusion_steps),
        "trained_betas": cfg.get("trained_betas"),
    }


def preset_schedule(spec: DiffusersSpec, options) -> NoiseSchedule:
    """The noise schedule a run of this model uses: its folder's scheduler config, else the spec's."""
    return schedule_from_record(read_schedule(spec, options.model_dir), f"{spec.name} schedule")


@dataclass
class DiffusersModel:
    """A denoiser ready to extract: its VAE (an identity in pixel space), conditioning and schedule."""

    preset: DiffusersSpec
    denoiser: nn.Module
    vae: nn.Module
    cond: dict  # name -> (1, ...)
    abar: torch.Tensor
    schedule: dict
    weights: dict
    vae_weights: dict
    conditioning: dict  # the store key's record of the conditioning

    def to(self, device) -> DiffusersModel:
        self.denoiser.requires_grad_(False).to(device)
        self.vae.requires_grad_(False).to(device)
        self.cond = {k: v.to(device) for k, v in self.cond.items()}
        return self

    def batch_cond(self, n: int) -> dict:
        return {k: v.expand(n, *v.shape[1:]).contiguous() for k, v in self.cond.items()}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, x) if self.preset.vae else x.float()

    def noised(self, z0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """DDPM's q_sample on the folder's schedule; flow-matching schedulers: (1 - s) z0 + s eps,
        s = t / steps."""
        if self.schedule["kind"] == "flow":
            s = t / self.schedule["steps"]
            return (1 - s) * z0 + s * eps
        a = self.abar[t].to(z0.device)
        return a**0.5 * z0 + (1 - a) ** 0.5 * eps

    def capture(self, x_t: torch.Tensor, steps: torch.Tensor, blocks) -> dict[int, torch.Tensor]:
        return capture(self.denoiser, self.preset, x_t, steps, self.batch_cond(x_t.shape[0]), blocks)


def load_model(
    spec: DiffusersSpec,
    folder: Path,
    *,
    random_init: bool = False,
    seed: int = 0,
    prompt: str = "",
    class_label: int | None = None,
    cond_file: Path | None = None,
) -> DiffusersModel:
    """Denoiser (from the folder, or random and seeded), VAE and text encoders from the folder;
    the conditioning computed here, once."""
    lib = libraries()
    folder = Path(folder)
    den = denoiser_folder(folder)
    sub = den.name if den != folder else ""
    weights: dict = {"model_dir": folder.name}
    if random_init:
        weights["denoiser"] = {"random_init": True, "init_seed": seed}
        denoiser = _seeded(seed, lambda: build_denoiser(spec))
    else:
        denoiser, weights["denoiser"] = from_folder(getattr(lib.diffusers, spec.denoiser_class), folder, sub)
    if spec.vae:
        vae, weights["vae"] = from_folder(lib.diffusers.AutoencoderKL, folder, "vae")
    else:
        vae, weights["vae"] = nn.Identity(), {"pixel_space": True}
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    cond, records, key = condition(spec, lib, folder, prompt, class_label, cond_file, from_folder, index)
    weights.update(records)
    schedule = read_schedule(spec, folder)
    abar = alphas_cumprod(
        schedule["beta_schedule"],
        schedule["beta_start"],
        schedule["beta_end"],
        schedule["steps"],
        schedule["trained_betas"],
    )
    return DiffusersModel(spec, denoiser, vae, cond, abar, schedule, weights, weights["vae"], key)
