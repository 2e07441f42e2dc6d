"""The probe stage's settings and the names of its registries, importable without torch.

The command line reads its choices and defaults from here, so `python -m probe --help` and
`python -m probe table` start without loading torch. `tests/probe/test_config.py` checks the
names against the registries themselves (probe.heads.HEADS, probe.grid.OPTIMIZERS, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEAD_NAMES = (
    "linear",
    "mlp",
    "cnn",
    "attention",
    "paper-attention",
    "paper-mlp",
    "paper-fusion",
)  # probe.heads.HEADS
BASELINE_NAMES = ("logreg", "knn")  # probe.heads.BASELINES
OPTIMIZER_NAMES = ("sgd", "adamw")  # probe.grid.OPTIMIZERS
SCHEDULE_NAMES = ("cosine", "step")  # probe.grid.SCHEDULES


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 7
    gamma: float = 0.1
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class ProbeConfig:
    train: Path
    test: Path | None = None
    val: Path | None = None  # an official validation store; else carved from train
    heads: tuple[str, ...] = ("linear",)
    head_options: tuple[str, ...] = ()  # NAME=VALUE, applied to every head that takes NAME
    features: tuple[
        str, ...
    ] = ()  # feature sets like "t10/b7/p2" or "t10/b7/p2+t50/b7/p2"; empty: each key alone
    features_from: Path | None = None  # a results file: train at the feature set it chose on validation
    ts: tuple[int, ...] = ()  # without features: only the store's keys with these t (empty: any)
    blocks: tuple[int, ...] = ()  # ... these b
    pools: tuple[int | None, ...] = ()  # ... these pools (None: the full map)
    lrs: tuple[float, ...] = (1e-3,)
    wds: tuple[float, ...] = (0.0,)
    head_lrs: tuple[tuple[str, float], ...] = ()  # (head, lr) used for heads when lrs is empty (a recipe's)
    recipe: str = ""  # the recipe whose defaults filled the options (probe.recipes), recorded in results
    training: TrainSettings = TrainSettings()  # epochs, batch size, optimizer, schedule, seed
    standardize: bool = True
    # a training store of K views: draw one per image and epoch, or average them ("mean")
    view_mode: str = "draw"
    val_fraction: float = 0.1
    # a choice on its grid's edge (lr, wd, C): extend the grid one step beyond it, at most this many
    # times (probe.edges); 0: only say so
    extend_edges: int = 0
    allow_overlap: bool = False  # go on (with a warning) when two splits share images
    buffer_mb: int = 1024  # bounds the feature rows held in memory (two shuffle windows)
    preload: bool | None = None  # None: preload when the training features fit in buffer_mb
    logreg_c: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    knn_k: tuple[int, ...] = (20,)
    knn_temperature: float = 0.07
    results: Path = Path("results")
    name: str | None = None
    device: str | None = None
    progress: bool = True
    tensorboard: Path | None = None  # also write the per-epoch history as TensorBoard event files here
