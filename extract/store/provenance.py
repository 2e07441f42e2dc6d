"""The one provenance builder: what every store records of how it was made (never part of its key)."""

from __future__ import annotations

from extract import __version__
from extract.store.config import flat, json_roundtrip


def run_config(cfg) -> dict:
    """A config as the store records it: flat option names, without the progress switch."""
    return {k: v for k, v in flat(cfg).items() if k != "progress"}


def provenance(
    kind: str,
    preset: str,
    cfg,
    dataset: dict,
    *,
    weights: dict | None = None,
    torch_version: str | None = None,
    stage: str = "extract",
    **extra,
) -> dict:
    """kind: the store kind (unet, latent, latents, backbone, pixels, features, samples); preset:
    the model's name; cfg: the run's config; dataset: the dataset record (for samples: what was
    drawn); stage: extract, or generate for drawn images. Returned as it reads back from attrs."""
    record = {"diffprobe_version": __version__}
    if torch_version is not None:
        record["torch_version"] = torch_version
    record.update(stage=stage, kind=kind, preset=preset)
    if weights is not None:
        record["weights"] = weights
    record.update(extra)
    record.update(dataset=dataset, config=run_config(cfg))
    return json_roundtrip(record)
