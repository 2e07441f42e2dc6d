"""The stores written without a diffusion model: raw pixels, a torchvision backbone's blocks and
a feature network's image-level features. Each command's options are generated from its
family's config (extract.models.pixels, backbone_options, feature_store)."""

from __future__ import annotations

import click

from extract.cli_generated import generated
from extract.store.cli_options import config_options, user_errors
from extract.store.config import from_flat


def _choices() -> dict:
    from extract.data.registry import DATASETS

    return {"data": list(DATASETS)}


def _pixel_params(args: list[str]) -> list[click.Parameter]:
    from extract.models.pixels import PixelConfig

    return config_options(PixelConfig, choices=_choices())


def _backbone_params(args: list[str]) -> list[click.Parameter]:
    from extract.models.backbone_options import BackboneConfig

    return config_options(BackboneConfig, choices=_choices())


def _feature_params(args: list[str]) -> list[click.Parameter]:
    from extract.models.feature_store import FeatureStoreConfig

    return config_options(FeatureStoreConfig, choices=_choices())


@generated(_pixel_params)
@user_errors
def pixels(**options):
    """Store raw preprocessed pixels in the feature schema (the no-model baseline)."""
    from extract.models.pixels import PixelConfig, extract_pixels

    click.echo(extract_pixels(from_flat(PixelConfig, **options)))


@generated(_backbone_params)
@user_errors
def backbone(**options):
    """Features of a standard backbone (ResNet-50 stages, ViT-B/16 blocks) in the same store schema."""
    from extract.models.backbones import BackboneConfig, extract_backbone

    click.echo(extract_backbone(from_flat(BackboneConfig, **options)))


@generated(_feature_params)
@user_errors
def features(**options):
    """Image-level features of a feature network (Inception-v3 for FID, the demo classifier, a
    torchvision backbone averaged over positions) as a store, for `analysis fd` and `analysis fid`."""
    from extract.models.feature_store import FeatureStoreConfig, extract_features

    click.echo(extract_features(from_flat(FeatureStoreConfig, **options)))
