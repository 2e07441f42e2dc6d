"""Training recipes: named sets of defaults for `python -m probe train --recipe NAME`.

`diffprobe` is this project's own (AdamW, cosine, standardized features, a validation carve
to choose lr and weight decay on). `paper` is the protocol of the paper's released code,
diffssl (`finetune.py`, `scripts/linear.sh`, `attention.sh`, `fusion.sh`): SGD without
momentum or weight decay, StepLR(7 epochs, x0.1), 28 epochs, batch 32 on each of 4 GPUs (128
in all), raw features, all of the training split, the test split (ImageNet val) evaluated after
the last epoch with nothing chosen on it; lr 1e-2 for linear heads, 5e-2 for attention and
fusion. A recipe may also give a head its own defaults (`head_defaults`: a learning-rate and
weight-decay grid, epochs, head options); they apply when every head of the run agrees on
them. An option given on the command line always wins over the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from probe.config import ProbeConfig, TrainSettings


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    options: dict  # probe train option -> value
    lr: float  # the learning rate of heads not listed in head_lr
    head_lr: dict = field(default_factory=dict)
    head_defaults: dict = field(default_factory=dict)  # head -> {lrs, wds, epochs, head_options}


# diffprobe's per-head defaults, sized for a CPU: a small lr x wd grid for the light heads,
# one member and fewer epochs for the heavier ones
DIFFPROBE_HEADS = {
    "linear": {"lrs": (1e-3, 3e-3, 1e-2), "wds": (0.0, 0.05)},
    "mlp": {"lrs": (1e-3, 3e-3, 1e-2), "wds": (0.0, 0.05), "epochs": 5},
    "cnn": {"lrs": (1e-3,), "wds": (0.05,), "epochs": 3},
    "attention": {"lrs": (1e-3,), "wds": (0.05,), "epochs": 3, "head_options": ("width=256",)},
}
HEAD_DEFAULT_KEYS = ("lrs", "wds", "epochs", "head_options")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "diffprobe",
            "AdamW, cosine, 20 epochs, batch 256, standardized features, "
            "lr and wd chosen on a 10% validation carve",
            {
                "epochs": 20,
                "batch_size": 256,
                "optimizer": "adamw",
                "momentum": 0.9,
                "schedule": "cosine",
                "step_epochs": 7,
                "standardize": True,
                "val_fraction": 0.1,
                "wds": (0.0,),
            },
            lr=1e-3,
            head_defaults=DIFFPROBE_HEADS,
        ),
        Recipe(
            "paper",
            "diffssl's: SGD (no momentum, no wd), StepLR(7, 0.1), 28 epochs, batch 128, raw features, "
            "100% of train, no selection",
            {
                "epochs": 28,
                "batch_size": 128,
                "optimizer": "sgd",
                "momentum": 0.0,
                "schedule": "step",
                "step_epochs": 7,
                "standardize": False,
                "val_fraction": 0.0,
                "wds": (0.0,),
            },
            lr=1e-2,
            head_lr={"paper-attention": 5e-2, "paper-fusion": 5e-2, "attention": 5e-2},
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None


def apply_recipe(name: str, options: dict) -> dict:
    """The options with every one left unset (None, or an empty list of lrs or wds) taken from
    the recipe; `head_lrs` gets each head's learning rate when no --lr was given."""
    recipe = get_recipe(name)
    out = dict(options)
    heads = tuple(out.get("heads", ()))
    for key in HEAD_DEFAULT_KEYS:  # a head's own default, when every head of the run agrees on it
        found = {recipe.head_defaults.get(h, {}).get(key) for h in heads}
        if heads and len(found) == 1 and None not in found and not out.get(key):
            out[key] = found.pop()
    for key, value in recipe.options.items():
        if out.get(key) is None or (key in ("wds",) and not out.get(key)):
            out[key] = value
    if not out.get("lrs"):
        out["lrs"] = ()
        out["head_lrs"] = tuple((h, recipe.head_lr.get(h, recipe.lr)) for h in out.get("heads", ()))
    out["recipe"] = recipe.name
    return out


def probe_config(recipe: str, **options) -> ProbeConfig:
    """A ProbeConfig from flat option names (ProbeConfig's and TrainSettings' fields), every
    option left unset taken from the recipe."""
    options = apply_recipe(recipe, options)
    names = {f.name for f in fields(TrainSettings)}
    training = TrainSettings(**{k: options.pop(k) for k in list(options) if k in names})
    return ProbeConfig(training=training, **options)
