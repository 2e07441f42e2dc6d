"""`--model-flags`: the flag line guided-diffusion's (or improved-diffusion's) README gives for a
checkpoint, built as a ModelPreset, so any U-Net those scripts train can be extracted.

The text is the flags themselves (`--image_size 64 --num_channels 192 ...`), `@FILE`, or the path
of a file holding them; shell assignments (`MODEL_FLAGS="..."`, `export DIFFUSION_FLAGS=...`)
are read for their value, so several README lines may be pasted together. Flags not given take
guided-diffusion's defaults (`script_util.model_and_diffusion_defaults`); the token
`--flavor improved` takes improved-diffusion's instead: its 32x32 channel multipliers
(1,2,2,2) and its `rescale_timesteps True` (the U-Net was fed t * 1000 / diffusion_steps, which
matters for its 4000-step models), and it refuses the flags improved-diffusion does not have.

Flags that change training, sampling or memory but not the forward (dropout, use_fp16,
timestep_respacing, lr, batch_size, ...) are accepted and recorded in the run's config, outside
the store key; an unknown flag or a bad value is one ValueError naming it. The preset is named
`flags:<hash of what it builds>` and carries the forward's flags written canonically (sorted,
values normalised), so a store's key tells stores made from other U-Nets apart, and a path or a
learning rate in the line does not. Torch-free at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from pathlib import Path

import click

from extract.models.adm_presets import ModelPreset

FLAVORS = ("guided", "improved")


def _bool(word: str) -> bool:  # guided-diffusion's str2bool
    if word.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if word.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError("expected True or False")


def _positive(word: str) -> int:
    value = int(word)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def _heads(word: str) -> int:  # -1: not set
    value = int(word)
    if value != -1 and value < 1:
        raise ValueError("expected -1 or a positive integer")
    return value


def _positives(word: str) -> tuple[int, ...]:
    values = tuple(_positive(w) for w in word.split(","))
    if not values:
        raise ValueError("expected comma-separated positive integers")
    return values


def _mult(word: str) -> tuple[int, ...] | str:  # "" lets image_size choose; guided-diffusion reads integers
    return _positives(word) if word else ""


def _schedule(word: str) -> str:
    if word not in ("linear", "cosine"):
        raise ValueError("expected linear or cosine")
    return word


# flags that shape the U-Net, its noise schedule or its timestep input:
# name -> (parser, guided-diffusion's default)
MODEL_FLAGS = {
    "image_size": (_positive, 64),
    "num_channels": (_positive, 128),
    "num_res_blocks": (_positive, 2),
    "num_heads": (_positive, 4),
    "num_heads_upsample": (_heads, -1),
    "num_head_channels": (_heads, -1),
    "attention_resolutions": (_positives, (16, 8)),
    "channel_mult": (_mult, ""),
    "class_cond": (_bool, False),
    "use_scale_shift_norm": (_bool, True),
    "resblock_updown": (_bool, False),
    "use_new_attention_order": (_bool, False),
    "learn_sigma": (_bool, False),
    "diffusion_steps": (_positive, 1000),
    "noise_schedule": (_schedule, "linear"),
    "rescale_timesteps": (_bool, False),
}
# accepted and recorded, never read: they change training, sampling or memory, not the forward
# (the rest of model_and_diffusion_defaults, then image_train.py / image_sample.py / classifier_sample.py)
RECORDED = {
    "dropout": float,
    "use_checkpoint": _bool,
    "use_fp16": _bool,
    "timestep_respacing": str,
    "use_kl": _bool,
    "predict_xstart": _bool,
    "rescale_learned_sigmas": _bool,
    "sigma_small": _bool,
    "data_dir": str,
    "schedule_sampler": str,
    "lr": float,
    "weight_decay": float,
    "lr_anneal_steps": int,
    "batch_size": int,
    "microbatch": int,
    "ema_rate": str,
    "log_interval": int,
    "save_interval": int,
    "resume_checkpoint": str,
    "fp16_scale_growth": float,
    "clip_denoised": _bool,
    "num_samples": int,
    "use_ddim": _bool,
    "model_path": str,
    "classifier_path": str,
    "classifier_scale": float,
    "classifier_use_fp16": _bool,
    "classifier_width": int,
    "classifier_depth": int,
    "classifier_attention_resolutions": _positives,
    "classifier_use_scale_shift_norm": _bool,
    "classifier_resblock_updown": _bool,
    "classifier_pool": str,
}
ONLY = {  # flags one code base has and the other does not
    "guided": {
        "num_head_channels",
        "channel_mult",
        "resblock_updown",
        "use_new_attention_order",
        *(k for k in RECORDED if k.startswith("classifier_")),
    },
    "improved": {"sigma_small"},
}
IMPROVED_DEFAULTS = {
    "rescale_timesteps": True
}  # improved-diffusion's model_and_diffusion_defaults where they differ
CHANNEL_MULT = {  # create_model's choice when --channel_mult is not given
    "guided": {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)},
    "improved": {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
}
_EXPECTED = {
    _bool: "True or False",
    _positive: "a positive integer",
    _heads: "-1 or a positive integer",
    _positives: "comma-separated positive integers",
    _mult: "comma-separated positive integers",
    _schedule: "linear or cosine",
    int: "an integer",
    float: "a number",
    str: "a word",
}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=(.*)", re.S)


def flags_text(value: str) -> str:
    """The flag text of an option value: the text itself, or a file's (`@FILE`, or a path)."""
    value = str(value).strip()
    path = Path(value[1:]).expanduser() if value.startswith("@") else Path(value).expanduser()
    if value.startswith("@") or ("--" not in value and path.is_file()):
        if not path.is_file():
            raise FileNotFoundError(f"--model-flags: file not found: {path}")
        return path.read_text(encoding="utf-8")
    if "--" not in value:
        raise ValueError(
            f"--model-flags: {value!r} is neither flags (--image_size 64 ...) nor a file of them"
        )
    return value


def _tokens(text: str) -> list[str]:
    """Words of the flag text; `NAME="..."` assignments (and `export`) give their value's words."""
    out = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                words = words[1:]
            for word in words:
                assigned = _ASSIGNMENT.fullmatch(word)
                out.extend(shlex.split(assigned.group(1)) if assigned else [word])
        except ValueError as e:
            raise ValueError(f"--model-flags: cannot read {line.strip()!r} ({e})") from None
    return out


def parse_flags(text: str) -> dict[str, object]:
    """The flags a text gives, by name, with typed values (`flavor` too, when given)."""
    words, given = _tokens(text), {}
    if not words:
        raise ValueError("--model-flags: no flags given")
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) < 3:
            raise ValueError(f"--model-flags: expected a --flag, got {word!r}")
        name, sep, raw = word[2:].partition("=")
        name = name.replace("-", "_")
        if not sep:
            if i + 1 == len(words) or words[i + 1].startswith("--"):
                raise ValueError(f"--model-flags: --{name} needs a value")
            raw, i = words[i + 1], i + 1
        i += 1
        if name == "flavor":
            value = raw.lower()
            if value not in FLAVORS:
                raise ValueError(f"--model-flags: --flavor {raw!r}: expected {' or '.join(FLAVORS)}")
        elif name in MODEL_FLAGS or name in RECORDED:
            parse = MODEL_FLAGS[name][0] if name in MODEL_FLAGS else RECORDED[name]
            try:
                value = parse(raw)
            except ValueError:
                raise ValueError(f"--model-flags: --{name} {raw!r}: expected {_EXPECTED[parse]}") from None
        else:
            raise ValueError(
                f"--model-flags: unknown flag --{name} "
                "(not a flag of guided-diffusion's or improved-diffusion's scripts)"
            )
        if name in given and given[name] != value:
            raise ValueError(
                f"--model-flags: --{name} given twice, as {_word(given[name])} and {_word(value)}"
            )
        given[name] = value
    return given


def _word(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return shlex.quote(str(value)) if isinstance(value, str) else str(value)


def canonical_flags(value: str) -> str:
    """The flag line written one way: given flags sorted by name, values normalised (True/False,
    integers, comma lists); `--flavor improved` kept, `--flavor guided` dropped (the default)."""
    given = parse_flags(flags_text(value))
    if given.get("flavor") == "guided":
        del given["flavor"]
    return " ".join(f"--{k} {_word(v)}" for k, v in sorted(given.items()))


def resolve_flags(given: dict[str, object]) -> dict[str, object]:
    """Every model flag: as given, else the flavor's default; channel_mult chosen from image_size."""
    flavor = given.get("flavor", "guided")
    foreign = sorted(set(given) & ONLY["guided" if flavor == "improved" else "improved"])
    if foreign:
        other = "guided-diffusion" if flavor == "improved" else "improved-diffusion"
        hint = "drop --flavor improved" if flavor == "improved" else "add --flavor improved"
        raise ValueError(f"--model-flags: --{foreign[0]} is a flag of {other} only ({hint})")
    out = {name: default for name, (_, default) in MODEL_FLAGS.items()}
    if flavor == "improved":
        out.update(IMPROVED_DEFAULTS)
    out.update({k: v for k, v in given.items() if k in MODEL_FLAGS})
    if out["channel_mult"] == "":
        table = CHANNEL_MULT[flavor]
        if out["image_size"] not in table:
            hint = "; give --channel_mult" + (
                ", or --flavor improved for improved-diffusion's (1,2,2,2) at 32"
                if flavor == "guided" and out["image_size"] == 32
                else ""
            )
            raise ValueError(
                f"--model-flags: {flavor}-diffusion has no default --channel_mult "
                f"for --image_size {out['image_size']} "
                f"(it has {', '.join(map(str, table))}){hint}"
            )
        out["channel_mult"] = table[out["image_size"]]
    levels = len(out["channel_mult"])
    if out["image_size"] % 2 ** (levels - 1):
        raise ValueError(
            f"--model-flags: --image_size {out['image_size']} does not halve {levels - 1} times "
            "(one per level of --channel_mult after the first)"
        )
    return out


def preset_from_flags(value: str) -> ModelPreset:
    """The ModelPreset of a flag line (or a file of flags), named `flags:<hash>`. It carries the
    flags that shape the forward (and --flavor), written canonically; the recorded-only ones
    (paths, lr, dropout, ...) stay in the run's config, outside the store key."""
    given = parse_flags(canonical_flags(value))
    flags = " ".join(
        f"--{k} {_word(v)}" for k, v in sorted(given.items()) if k in MODEL_FLAGS or k == "flavor"
    )
    full = resolve_flags(given)
    flavor = given.get("flavor", "guided")
    preset = ModelPreset(
        name="flags",
        description=f"U-Net from --model-flags, {flavor}-diffusion's defaults for flags not given",
        image_size=full["image_size"],
        num_channels=full["num_channels"],
        num_res_blocks=full["num_res_blocks"],
        channel_mult=tuple(full["channel_mult"]),
        attention_resolutions=tuple(full["attention_resolutions"]),
        num_heads=full["num_heads"],
        num_head_channels=full["num_head_channels"],
        num_heads_upsample=full["num_heads_upsample"],
        use_scale_shift_norm=full["use_scale_shift_norm"],
        resblock_updown=full["resblock_updown"],
        use_new_attention_order=full["use_new_attention_order"],
        learn_sigma=full["learn_sigma"],
        class_cond=full["class_cond"],
        diffusion_steps=full["diffusion_steps"],
        noise_schedule=full["noise_schedule"],
        # t * 1000 / steps is t itself at 1000 steps: recorded only where it changes the input
        rescale_timesteps=full["rescale_timesteps"] and full["diffusion_steps"] != 1000,
        flags=flags,
    )
    built = {
        k: v
        for k, v in preset.to_dict().items()
        if k not in ("name", "description", "checkpoint", "shipped", "flags")
    }
    digest = hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()[:10]
    return dataclasses.replace(preset, name=f"flags:{digest}")


def flags_block_table(value: str) -> tuple[ModelPreset, list]:
    """The preset of a flag line and its block table, from a build and forward on the meta device:
    flags guided-diffusion cannot build (heads that do not divide the channels, channels
    GroupNorm cannot group) are one ValueError, not a traceback."""
    from extract.models.adm_blocks import block_table

    preset = preset_from_flags(value)
    try:
        return preset, block_table(preset)
    except (AssertionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--model-flags: guided-diffusion cannot build this U-Net ({first})") from None


def checked_preset(value: str) -> ModelPreset:
    """preset_from_flags, once the U-Net it names is known to build (flags_block_table)."""
    return flags_block_table(value)[0]


# ---------------------------------------------------------------- the command line
HELP = (
    "a guided-diffusion U-Net from the flags its README gives for a checkpoint "
    "('--image_size 64 --num_channels 192 ...'; "
    "MODEL_FLAGS and DIFFUSION_FLAGS together), @FILE or a file of them "
    '(MODEL_FLAGS="..." lines too), instead of --model: '
    "give one of them. Flags not given take guided-diffusion's defaults; "
    "'--flavor improved' takes improved-diffusion's"
)


def model_flags_option(fn):
    """`--model-flags TEXT|@FILE` of the commands that build a preset's U-Net;
    read it with `take_model_flags`."""
    return click.option("--model-flags", help=HELP)(fn)


def take_model_flags(value: str | None) -> str:
    """A command's --model-flags as its config holds it: '' when not given, else the flag line (a
    file's read in) written canonically, so a store records the flags themselves. Naming --model
    too on the command line is an error, and so is a bad flag (ValueError: one line, as usual)."""
    if not value:
        return ""
    if click.get_current_context().get_parameter_source("model") is click.core.ParameterSource.COMMANDLINE:
        raise ValueError(
            "--model and --model-flags exclude each other: "
            "--model-flags builds the U-Net itself; give one of them"
        )
    preset_from_flags(value)  # a bad flag fails here, before any work
    return canonical_flags(value)
