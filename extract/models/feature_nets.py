"""Feature networks for Fréchet distances of image sets: a registry of families.

- `inception`: Inception-v3's 2048-d pool features as the public FID code computes them,
  through torch-fidelity's port of the TensorFlow graph (its bilinear resize to 299 matches
  TensorFlow's); the weights come from a local file (`--inception-weights`), never downloaded.
  `inception-logits`: the same network's 1008 logits (torch-fidelity's `logits_unbiased`), for
  the Inception Score.
- `torchvision:resnet50`, `torchvision:vit_b_16`: the last block of extract's backbones, averaged
  over positions, on images preprocessed as `extract backbone` does (224, ImageNet mean/std).
- `classifier:FILE`: the small Fashion-MNIST CNN's 128-d features (extract.models.classifier).
  `classifier-logits:FILE`: its 10 logits, for the class balance of samples.

Every extractor takes uint8 images (N, H, W, C) and returns float64 features (N, d), and says
what it is (implementation, version, weights file and sha256) in `record`, which becomes part
of the key of the store `extract features` writes (extract.models.feature_store).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# torch-fidelity names its converted TensorFlow weights file after the first 8 hex digits of its sha256
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_SHA256_PREFIX = "6726825d"


@dataclass
class Extractor:
    name: str
    record: dict  # what made the features: part of every cache key
    dim: int  # -1: the image's size (pixels)
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    channels: int | None = None  # the input channels it needs (None: 1 or 3, gray replicated)
    size: int | None = None  # the input size it needs (None: any)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float64 (N, dim)."""
        return np.asarray(self.fn(images), dtype=np.float64).reshape(len(images), -1)


@dataclass(frozen=True)
class FeatureSpec:
    """How to build an extractor: `--features`, and the weights it needs."""

    features: str = "inception"
    inception_weights: Path | None = None
    weights: Path | None = None  # torchvision backbones
    random_init: bool = False  # random weights: checks the pipeline; the number is not an FID
    device: str = "cpu"
    seed: int = 0


def _nchw(images: np.ndarray, device: torch.device, rgb: bool) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, C, H, W) on device; grayscale replicated when rgb."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if rgb and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous().to(device)


def _torch_fidelity():
    """torch-fidelity (the `fid` extra); a missing one is one clear error."""
    try:
        import torch_fidelity
        import torch_fidelity.feature_extractor_inceptionv3  # noqa: F401 - the module used
    except ImportError:
        raise ValueError(
            "Inception features (FID, KID, IS) need torch-fidelity: pip install 'diffprobe[fid]'"
        ) from None
    return torch_fidelity


def inception_network(state: dict[str, torch.Tensor] | None, layer: str = "2048"):
    """torch-fidelity's Inception-v3 with the given weights, or with PyTorch's default init
    (an architecture-only build, for tests) when state is None.

    torch-fidelity reads its weights file with `torch.load(weights_only=False)`, which would run
    code hidden in an untrusted file. So the file is read here weights-only and what
    torch-fidelity loads is an in-memory copy of those plain tensors."""
    FeatureExtractorInceptionV3 = _torch_fidelity().feature_extractor_inceptionv3.FeatureExtractorInceptionV3

    class Inception(FeatureExtractorInceptionV3):
        def load_state_dict(self, sd, strict=True, assign=False):
            return None if not sd else super().load_state_dict(sd, strict=strict, assign=assign)

    buffer = io.BytesIO()
    torch.save(state or {}, buffer)
    buffer.seek(0)
    return Inception("inception-v3-compat", [layer], feature_extractor_weights_path=buffer)


def inception_shapes() -> dict[str, tuple[int, ...]]:
    with torch.random.fork_rng(devices=[]):
        return {k: tuple(v.shape) for k, v in inception_network(None).state_dict().items()}


# torch-fidelity's layer names: pool3 for FID and KID,
# the 1008 logits (without the bias) for the Inception Score
INCEPTION_LAYERS = {
    "inception": ("2048", "2048 (pool3)", 2048),
    "inception-logits": ("logits_unbiased", "logits_unbiased (1008)", 1008),
}


def _inception(spec: FeatureSpec, arg: str, family: str = "inception") -> Extractor:
    torch_fidelity = _torch_fidelity()

    from extract.models.weights import CheckpointError, file_sha256, fit_of, read_state_dict

    layer, described, dim = INCEPTION_LAYERS[family]
    record = {
        "features": family,
        "implementation": f"torch-fidelity {torch_fidelity.__version__}",
        "layer": described,
    }
    if spec.random_init == (spec.inception_weights is not None):
        raise ValueError(
            f"--features {family} needs --inception-weights FILE (torch-fidelity's {TORCH_FIDELITY_WEIGHTS}; "
            "it cannot be downloaded here), or --random-init for a pipeline check"
        )
    if spec.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            net = inception_network(None, layer)
        record.update(weights="random-init", init_seed=spec.seed)
    else:
        state = read_state_dict(spec.inception_weights)
        fit = fit_of({k: tuple(v.shape) for k, v in state.items()}, inception_shapes())
        if not fit.ok:
            raise CheckpointError(
                f"{spec.inception_weights} is not torch-fidelity's Inception-v3 "
                f"({TORCH_FIDELITY_WEIGHTS}): {fit.describe(limit=2)}"
            )
        net = inception_network({k: v.float() for k, v in state.items()}, layer)
        sha = file_sha256(spec.inception_weights)
        record.update(
            weights=Path(spec.inception_weights).name,
            sha256=sha,
            standard=sha.startswith(TORCH_FIDELITY_SHA256_PREFIX),
        )
    device = torch.device(spec.device)
    net = net.to(device)

    @torch.no_grad()
    def fn(images: np.ndarray) -> np.ndarray:
        (feats,) = net(_nchw(images, device, rgb=True))
        return feats.double().cpu().numpy()

    return Extractor(family, record, dim, fn)


def _classifier(spec: FeatureSpec, arg: str, logits: bool = False) -> Extractor:
    from extract.models.classifier import CHANNELS, FEATURE_DIM, IMAGE_SIZE, load_classifier

    family = "classifier-logits" if logits else "classifier"
    if not arg:
        raise ValueError(
            f"--features {family}:FILE needs the classifier's weights file, "
            f"e.g. {family}:extract/weights/fmnist-classifier.pt"
        )
    model, sha = load_classifier(arg)
    device = torch.device(spec.device)
    model = model.to(device)

    @torch.no_grad()
    def fn(images: np.ndarray) -> np.ndarray:
        x = (
            _nchw(images, device, rgb=False).float() / 127.5 - 1.0
        )  # extract.data.sources.preprocess's scaling
        return (model(x) if logits else model.features(x)).double().cpu().numpy()  # eval mode: dropout is off

    dim, layer = (
        (model.head.out_features, f"head ({model.head.out_features} logits)")
        if logits
        else (FEATURE_DIM, "embed (128, under the classifier)")
    )
    record = {
        "features": family,
        "implementation": "extract.models.classifier.SmallCNN",
        "layer": layer,
        "weights": Path(arg).name,
        "sha256": sha,
    }
    return Extractor(family, record, dim, fn, channels=CHANNELS, size=IMAGE_SIZE)


def _torchvision(spec: FeatureSpec, arg: str) -> Extractor:
    from PIL import Image

    from extract.data.sources import center_crop
    from extract.models.backbones import (
        BACKBONES,
        IMAGE_SIZE,
        MEAN,
        STD,
        BackboneConfig,
        capture,
        load_backbone,
    )
    from extract.store.config import StoreOptions

    name = f"torchvision:{arg}"
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    model, blocks, weights = load_backbone(
        BackboneConfig(
            store=StoreOptions(out=Path(".")),
            model=name,
            weights=spec.weights,
            random_init=spec.random_init,
            seed=spec.seed,
        )
    )
    device = torch.device(spec.device)
    model = model.to(device)
    last = len(blocks)

    def fn(images: np.ndarray) -> np.ndarray:
        # extract's center crop to 224 (as `extract backbone` preprocesses), then ImageNet's normalisation
        crops = [
            np.asarray(
                center_crop(
                    Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).convert("RGB"), IMAGE_SIZE
                )
            )
            for im in images
        ]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255).to(device)
        out = capture(model, blocks, (x - MEAN.to(device)) / STD.to(device), (last,))[last]
        return out.float().mean((2, 3)).double().cpu().numpy()

    record = {
        "features": name,
        "implementation": f"torchvision, block {last} averaged over positions",
        "weights": weights,
    }
    dims = {"torchvision:resnet50": 2048, "torchvision:vit_b_16": 768}
    return Extractor(name, record, dims[name], fn)


def _pixels(spec: FeatureSpec, arg: str) -> Extractor:
    """The uint8 pixel values themselves: a feature space where distances have closed forms."""
    return Extractor(
        "pixels",
        {"features": "pixels", "implementation": "uint8 values, flattened"},
        -1,
        lambda x: x.reshape(len(x), -1),
    )


FAMILIES: dict[str, Callable[[FeatureSpec, str], Extractor]] = {
    "pixels": _pixels,
    "inception": _inception,
    "inception-logits": lambda spec, arg: _inception(spec, arg, "inception-logits"),
    "classifier": _classifier,
    "classifier-logits": lambda spec, arg: _classifier(spec, arg, logits=True),
    "torchvision": _torchvision,
}


def build_extractor(spec: FeatureSpec) -> Extractor:
    """`inception`, `classifier:FILE` or `torchvision:NAME`; an unknown family lists the valid ones."""
    family, _, arg = spec.features.partition(":")
    try:
        factory = FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"--features {spec.features!r}: choose inception, inception-logits, classifier:FILE, "
            "classifier-logits:FILE, torchvision:resnet50, torchvision:vit_b_16 or pixels"
        ) from None
    return factory(spec, arg)
