"""The experiments by name, and the runner that shows or runs the steps one yields.

An experiment is a generator function `fn(s: Settings) -> Iterator[Step]` registered with
`@experiment("name")`; its first docstring line describes it. Its own defaults and rows are
its table in experiments.toml. A condition on the disk (a store already made, a results file
present) is tested in the function, when the step comes: the runner consumes the generator one
step at a time, so earlier steps have run by then.
"""

from __future__ import annotations


from dataclasses import dataclass
from typing import Callable, Iterator

from diffprobe.experiments.settings import Settings, read_toml, resolve
from diffprobe.experiments.steps import Echo, Step

Steps = Iterator[Step]


@dataclass(frozen=True)
class Experiment:
    name: str
    steps: Callable[[Settings], Steps]
    reads_record: bool = False  # a bare `make probe` or `make cka` reads the last extraction's record
    # Settings, or a subclass adding the experiment's own fields (their defaults: its table's settings)
    cls: type = Settings

    @property
    def description(self) -> str:
        return " ".join((self.steps.__doc__ or "").split("\n\n")[0].split())

    @property
    def table(self) -> dict:
        """Its entry of experiments.toml: settings, rows, default_row."""
        return read_toml("experiments.toml").get(self.name, {})

    def settings(self, given: dict[str, str], row: str | None = None) -> Settings:
        return resolve(self.table, given, row, reads_record=self.reads_record, cls=self.cls)


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, *, reads_record: bool = False, cls: type = Settings):
    """Register a generator function of settings as the experiment `name`; `cls`: a frozen
    dataclass subclassing Settings with the experiment's own fields, whose defaults are given in
    its `[NAME.settings]` table of experiments.toml."""

    def register(fn: Callable[[Settings], Steps]) -> Callable[[Settings], Steps]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} registered twice")
        EXPERIMENTS[name] = Experiment(name, fn, reads_record, cls)
        return fn

    return register


def get_experiment(name: str) -> Experiment:
    from diffprobe.experiments import catalog  # noqa: F401 - registers every experiment

    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}"
        ) from None


def describe() -> str:
    """Every experiment with its description, and its rows."""
    from diffprobe.experiments import catalog  # noqa: F401 - registers every experiment

    lines = []
    for name in sorted(EXPERIMENTS):
        spec = EXPERIMENTS[name]
        lines.append(f"{name:<20} {spec.description}")
        if spec.table.get("rows"):
            lines.append(f"{'':<20} rows: {' '.join(spec.table['rows'])}")
    return "\n".join(lines)


def echo(text: str) -> None:
    print(text, flush=True)


def run_experiment(spec: Experiment, settings: Settings, *, dry: bool, out: Echo = echo) -> None:
    """Build every step first (a mistake stops here, before anything runs), then show or run
    them one by one."""
    for _ in spec.steps(settings):
        pass
    for step in spec.steps(settings):
        step.show(out) if dry else step.run(out)
