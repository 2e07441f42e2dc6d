"""One runner for every experiment: read its TOML file, resolve the settings, and print or run
its steps (extract, probe and analysis commands).

Settings resolve in this order, the later winning:
1. `settings.toml` (every setting an experiment may read, with its default);
2. the experiment file's `[settings]`;
3. the record of the last `extract` (`<out>/last-extract.json`), for experiments that read it;
4. what the user gave (`--set name=value`, or a make variable of the same name in upper case);
5. the chosen row's table (`[rows.NAME]`), then the step's own fields.
A value may refer to others: `{t}` is a setting, `{first:t}` its first comma item, `{tag:t}`
its commas as dashes, `{opt:limit:--limit}` is `--limit <limit>` or nothing, `{weights}` is
`--ckpt <ckpt>`, `--random-init` or nothing, `{trainsplit:NAME}` the setting NAME in a step for
the training split (the first of `splits`) and nothing for the others, `{store:train}` the store path of a split (the one
function that names stores: `store_path`), `{pixels:train}` a raw-pixel store, and
`{features:full}` the `+`-joined feature set of every (t, b) at one pool, `{stem:NAME}` the
file name in NAME without folder and suffix, and for an item `LABEL=PATH` `{label:NAME}` is its label
and `{path:NAME}` its path (a bare path is its own path, labelled by its stem); `{{` and `}}` are literal braces.

A step is a table: `run` (a command line after `python -m`, formatted as above; with
`plan = true` a dry run also runs it with `--plan`, which prints its cost and writes nothing), `each`
(repeat it for every split, as `{split}`; `each = "seed"` for every item of `seeds`, as
`{seed}`; a list of names for every combination; `"seed+head_seed"` pairs the k-th items), `unless_exists` (skip when that path exists; a feature store only when complete),
`only_if` (skip it, saying `only_if_hint`, when that path is missing), `needs` and
`needs_hint` (stop with the hint when a path is missing), `experiment` (run
another experiment with the settings so far), `record = true` (write the record), or
`copy = [from, to]` (a file or a folder's files). Any other field sets a setting for the step.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = (
    "model",
    "ckpt",
    "random",
    "data",
    "data_root",
    "splits",
    "t",
    "b",
    "pool",
    "limit",
    "block_pools",
    "aug",
    "views",
    "order",
    "dtype",
    "seed",
)
STEP_FIELDS = {
    "run",
    "each",
    "unless_exists",
    "only_if",
    "only_if_hint",
    "needs",
    "needs_hint",
    "experiment",
    "record",
    "copy",
    "say",
    "plan",
}


def experiment_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml") if p.stem != "settings")


def load(name: str) -> dict:
    path = HERE / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(experiment_names())}")
    with path.open("rb") as f:
        return tomllib.load(f)


def defaults() -> dict[str, str]:
    with (HERE / "settings.toml").open("rb") as f:
        return {k: str(v) for k, v in tomllib.load(f).items()}


# ---------------------------------------------------------------- store paths
def tag(value: str) -> str:
    return value.replace(" ", "").replace(",", "-")


def store_path(
    out: str,
    model: str,
    random: bool,
    data: str,
    split: str,
    t: str,
    b: str,
    pool: str,
    limit: str = "",
    *,
    views: str = "1",
    aug: str = "none",
    dtype: str = "fp32",
    order: str = "sorted",
    block_pools: str = "",
    seed: str = "",
) -> str:
    """The one name of a feature store: <out>/<model>[-random]_<data>_<split>_t<T>_b<B>_p<POOL>[_n<LIMIT>]
    [_bp<BLOCK-POOLS>][_v<K>-<AUG>][_<DTYPE>][_shuffled][_s<SEED>].zarr, the bracketed parts only
    when they differ from no block's own pools, one centre view, fp32, dataset order and seed 0."""
    name = f"{model}{'-random' if random else ''}_{data}_{split}_t{tag(t)}_b{tag(b)}_p{tag(pool)}{f'_n{limit}' if limit else ''}"
    if block_pools:
        name += "_bp" + tag(block_pools.replace(":", "-"))
    if views not in ("", "1") or aug not in ("", "none"):
        name += f"_v{views or 1}-{aug or 'none'}"
    name += "" if dtype in ("", "fp32") else f"_{dtype}"
    name += "" if order in ("", "sorted") else f"_{order}"
    name += "" if seed in ("", "0") else f"_s{seed}"
    return f"{out}/{name}.zarr"


def pixel_path(out: str, data: str, split: str, limit: str = "") -> str:
    """The raw-pixel baseline's store: <out>/pixels_<data>_<split>[_n<LIMIT>].zarr."""
    return f"{out}/pixels_{data}_{split}{f'_n{limit}' if limit else ''}.zarr"


# ---------------------------------------------------------------- formatting
PLACEHOLDER = re.compile(r"\{([a-z_]+(?::[^{}]*)?)\}")


@dataclass
class Settings:
    values: dict[str, str]

    def get(self, name: str, depth: int = 0) -> str:
        if name not in self.values:
            raise ValueError(f"unknown setting {name!r}")
        return self.format(self.values[name], depth + 1)

    def format(self, text: str, depth: int = 0) -> str:
        if depth > 20:
            raise ValueError(f"settings refer to each other in a loop: {text!r}")
        escaped = text.replace("{{", "\0").replace("}}", "\1")  # {{ and }} stand for literal braces
        return (
            PLACEHOLDER.sub(lambda m: self._expand(m.group(1), depth), escaped)
            .replace("\0", "{")
            .replace("\1", "}")
        )

    def _expand(self, spec: str, depth: int) -> str:
        fn, _, arg = spec.partition(":")
        if not arg:
            return self._plain(fn, depth)
        first, _, rest = arg.partition(":")
        if fn in ("store", "pixels"):
            return self._store(fn, arg, depth)
        if fn == "features":
            ts, bs = (self.get(k, depth).split(",") for k in ("t", "b"))
            return "+".join(f"t{t}/b{b}/{arg}" for t in ts for b in bs)
        if fn in ("exists", "exists_opt"):
            path = (
                self.get(first, depth) if first in self.values else self.format(first, depth)
            )  # a setting's value, or a path
            found = Path(path).exists()
            if fn == "exists":
                return path if found else self.format(rest, depth)
            return (f"{rest}{path}" if rest.endswith("=") else f"{rest} {path}") if found else ""
        value = self.get(first, depth)
        if fn == "first":
            return value.replace(" ", ",").split(",")[0]
        if fn == "block":  # the first block; 'all' means the paper's block, 24
            b = value.split(",")[0]
            return "24" if b == "all" else b
        if fn == "tag":
            return tag(value)
        if fn == "stem":  # a file's name without its folder and suffix
            return Path(value).stem
        if fn in ("label", "path"):  # an item "LABEL=PATH" (or a bare path, labelled by its stem)
            label, eq, path = value.partition("=")
            if fn == "path":
                return path if eq else value
            return label if eq else Path(value).stem
        if fn == "or":
            return value or rest
        if fn == "union":
            items = value.split(",") + self.get(rest, depth).split(",")
            return ",".join(dict.fromkeys(i for i in items if i))
        if fn == "opt":
            return (
                ""
                if not value
                else (f"{rest}{value}" if rest.endswith("=") else f"{rest} {shlex.quote(value)}")
            )
        if fn == "if":
            return rest if value else ""
        if (
            fn == "trainsplit"
        ):  # the setting's value in a step for the training split (the first of `splits`), else nothing
            return value if self.get("split", depth) == self.get("splits", depth).split()[0] else ""
        if fn == "nondefault":
            return "" if value == self.format(defaults().get(first, ""), depth) else f"{rest}{value}"
        raise ValueError(f"unknown placeholder {{{spec}}}")

    def _plain(self, name: str, depth: int) -> str:
        if name == "weights":
            ckpt, random = self.get("ckpt", depth), self.get("random", depth)
            return f"--ckpt {ckpt}" if ckpt else ("--random-init" if random else "")
        if name == "testsplit":  # the second split, else the only one
            return self.get("splits", depth).split()[-1]
        return self.get(name, depth)

    def _value(self, text: str, depth: int) -> str:
        """A store argument: the n-th split (#n), a setting's value, or the text itself."""
        if re.fullmatch(r"#\d", text):
            splits = self.get("splits", depth).split()
            if int(text[1:]) >= len(splits):
                raise ValueError(f"SPLITS={' '.join(splits)}: give a training and a test split")
            return splits[int(text[1:])]
        return self.get(text, depth) if text in self.values else text

    def _store(self, fn: str, arg: str, depth: int) -> str:
        """{store:SPLIT} or {store:split=..,t=..,b=..,pool=..,limit=..,random=..}: the path
        with those parts changed (each a setting's name, #n, or the text itself)."""
        parts = dict(p.partition("=")[::2] for p in arg.split(",")) if "=" in arg else {"split": arg}
        unknown = set(parts) - {"split", "t", "b", "pool", "limit", "random", "out"}
        if unknown:
            raise ValueError(f"{{{fn}:{arg}}}: unknown part {', '.join(sorted(unknown))}")
        value = {
            k: self._value(parts[k], depth)
            if k in parts
            else self.get("store_out" if k == "out" else k, depth)
            for k in ("split", "t", "b", "pool", "limit", "random", "out")
        }
        if fn == "pixels":
            return pixel_path(value["out"], self.get("data", depth), value["split"], value["limit"])
        training = (
            value["split"] == self.get("splits", depth).split()[0]
        )  # views and augmentation are the training split's
        extra = {
            k: self.get(k, depth) if k in self.values else ""
            for k in ("views", "aug", "dtype", "order", "block_pools", "seed")
        }
        if not training:
            extra.update(views="", aug="")
        return store_path(
            value["out"],
            self.get("model", depth),
            bool(value["random"]),
            self.get("data", depth),
            value["split"],
            value["t"],
            value["b"],
            value["pool"],
            value["limit"],
            **extra,
        )


# ---------------------------------------------------------------- resolving
def each_binding(each, settings: Settings) -> list[dict[str, str]]:
    """The settings a step with `each` runs under, one dict per repetition: `each = "split"`
    binds `split` to every item of `splits`, and any `each = "NAME"` binds NAME to every item of
    the setting NAME + "s" (items split at spaces or commas); a list of names repeats the step
    for every combination, the last name varying fastest. Names joined by "+" go in step, the
    k-th item of each together ("seed+head_seed": seed k with head seed k), and must be as long."""
    names = [each] if isinstance(each, str) else list(each)
    combos: list[dict[str, str]] = [{}]
    for joined in names:
        columns = {name: each_items(name, settings) for name in joined.split("+")}
        lengths = {len(items) for items in columns.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{name + 's'!r} has {len(items)}" for name, items in columns.items())
            raise ValueError(f"each = {joined!r} pairs items in step, so they must be as many: {sizes}")
        rows = [dict(zip(columns, row)) for row in zip(*columns.values())]
        combos = [{**c, **r} for c in combos for r in rows]
    return combos


def each_items(name: str, settings: Settings) -> list[str]:
    if name + "s" not in settings.values or name not in settings.values:
        raise ValueError(f"each = {name!r}: no settings {name!r} and {name + 's'!r} to repeat over")
    items = [i for i in re.split(r"[\s,]+", settings.get(name + "s")) if i]
    if not items:
        raise ValueError(f"each = {name!r}: the setting {name + 's'!r} is empty")
    return items


def record_path(values: dict[str, str]) -> Path:
    return Path(Settings(values).get("out")) / "last-extract.json"


def resolve(name: str, given: dict[str, str], row: str | None = None) -> tuple[dict, Settings]:
    """The experiment's table and its settings, in the order the module docstring gives."""
    spec = load(name)
    values = defaults()
    values.update({k: str(v) for k, v in spec.get("settings", {}).items()})
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ValueError(
            f"experiment {name} has no setting {', '.join(unknown)}; it reads: {', '.join(sorted(values))}"
        )
    if spec.get("reads_record"):
        path = record_path({**values, **given})
        if path.is_file():
            values.update({k: v for k, v in json.loads(path.read_text()).items() if k in RECORDED})
    values.update(given)
    rows = spec.get("rows", {})
    if rows:
        row = row or values.get("row") or spec.get("default_row")
        if row not in rows:
            raise ValueError(f"unknown ROW={row}: choose one of {' '.join(rows)}")
        unknown = sorted(set(rows[row]) - set(values))
        if unknown:
            raise ValueError(f"row {row} sets unknown settings: {', '.join(unknown)}")
        values.update({k: str(v) for k, v in rows[row].items()})
        values["row"] = row
    return spec, Settings(values)


# ---------------------------------------------------------------- running
@dataclass
class Runner:
    dry: bool = False
    python: str = sys.executable
    echo = print

    def command(self, line: str, always: bool = False) -> None:
        """Print the command; run it unless this is a dry run (`always`: a read-only command that runs even then)."""
        argv = shlex.split(line)
        python = Path(self.python)
        shown_python = (
            str(python.relative_to(Path.cwd())) if python.is_relative_to(Path.cwd()) else str(python)
        )
        shown = " ".join(shlex.quote(a) for a in [shown_python, "-m", *argv])
        self.echo(shown, flush=True)
        if always or not self.dry:
            done = subprocess.run([self.python, "-m", *argv])
            if done.returncode:
                raise SystemExit(done.returncode)

    def run(self, name: str, given: dict[str, str], row: str | None = None) -> None:
        spec, settings = resolve(name, given, row)
        # what a nested experiment inherits: this one's own settings, the user's, the row's
        chosen = (
            {k: str(v) for k, v in spec.get("settings", {}).items()}
            | given
            | spec.get("rows", {}).get(settings.values.get("row"), {})
        )
        for step in spec.get("step", []):
            self.step(step, settings, {k: str(v) for k, v in chosen.items()})

    def step(self, step: dict, settings: Settings, chosen: dict[str, str]) -> None:
        fields = {k: str(v) for k, v in step.items() if k not in STEP_FIELDS}
        unknown = sorted(set(fields) - set(settings.values))
        if unknown:
            raise ValueError(f"a step sets unknown settings: {', '.join(unknown)}")
        local = Settings({**settings.values, **fields})
        for bound in each_binding(step.get("each", []), local):
            here = Settings({**local.values, **bound})
            if "needs" in step and not Path(here.format(step["needs"])).exists() and not self.dry:
                self.echo(here.format(step["needs_hint"]))
                raise SystemExit(1)
            if "unless_exists" in step and made(Path(here.format(step["unless_exists"]))):
                continue
            if "only_if" in step and not Path(here.format(step["only_if"])).exists():
                if "only_if_hint" in step:
                    self.echo(here.format(step["only_if_hint"]))
                continue
            if "experiment" in step:
                inner = {**chosen, **fields, **bound}
                known = set(defaults()) | set(load(step["experiment"]).get("settings", {}))
                self.run(step["experiment"], {k: v for k, v in inner.items() if k in known})
            if "say" in step:
                self.echo(here.format(step["say"]))
            if "run" in step:
                self.command(here.format(step["run"]))
                if self.dry and step.get("plan"):  # what the command would cost: it reads, and writes nothing
                    self.command(
                        here.format(step["run"] + " --plan {opt:images_per_s:--images-per-s}"), always=True
                    )
            if step.get("record"):
                self.write_record(here)
            if "copy" in step:
                self.copy(*(here.format(p) for p in step["copy"]))

    def write_record(self, settings: Settings) -> None:
        path = record_path(settings.values)
        self.echo(f"recorded in {path}: a bare 'make probe' or 'make cka' uses these stores")
        if not self.dry:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({k: settings.get(k) for k in RECORDED}, indent=1) + "\n")

    def copy(self, source: str, target: str) -> None:
        self.echo(f"copy {source} -> {target}")
        if self.dry:
            return
        src, dst = Path(source), Path(target)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.glob("*.json"):
                shutil.copy2(f, dst / f.name)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def made(path: Path) -> bool:
    """Whether a step's output is there: a feature store (.zarr) only once its extraction finished,
    so a killed extraction is resumed by its step instead of skipped; anything else when it exists."""
    if path.suffix != ".zarr" or not path.exists():
        return path.exists()
    from extract.store.schema import FeatureStore

    try:
        return FeatureStore.open(path).complete
    except Exception:  # noqa: BLE001 - unreadable (torn) stores are not made; the step's command says what is wrong
        return False


def from_environment(name: str, environ: dict[str, str]) -> dict[str, str]:
    """The settings of experiment `name` given as environment variables of the same name in
    upper case (how make hands over the variables given on its command line)."""
    spec = load(name)
    known = set(defaults()) | set(spec.get("settings", {}))
    return {k: environ[k.upper()] for k in sorted(known) if k.upper() in environ}


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        out[key.strip().lower()] = value
    return out


def describe() -> str:
    """Every experiment with the first line of its description, and its rows."""
    lines = []
    for name in experiment_names():
        spec = load(name)
        lines.append(f"{name:<20} {spec.get('description', '').splitlines()[0]}")
        if spec.get("rows"):
            lines.append(f"{'':<20} rows: {' '.join(spec['rows'])}")
    return "\n".join(lines)
