"""The steps an experiment yields, each able to show itself (a dry run) and to run in this process.

`Extract` holds an extraction's config and calls `extract.run.extract`; `Command` is any other
stage command, run through its stage's click group in this process (so results files record the
same invocation as the command typed by hand); `Say`, `Need`, `Record` and `Copy` are the
runner's own. A step is built complete when the experiment yields it, so the runner can build
every step of an experiment before it runs the first.
"""

from __future__ import annotations

import importlib
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from extract.store.config import ExtractConfig
from extract.store.location import exists, store_location, write_text

Echo = Callable[[str], None]


class Step(Protocol):
    def show(self, echo: Echo) -> None:
        """What a dry run prints; reads only."""

    def run(self, echo: Echo) -> None:
        """Do it (printing what a dry run prints first)."""


def command_line(stage: str, argv: tuple[str, ...]) -> str:
    return shlex.join(["diffprobe", stage, *argv])


@dataclass(frozen=True)
class Extract:
    """`extract run ARGV`: its config, parsed by the command's own options."""

    argv: tuple[str, ...]
    cfg: ExtractConfig
    images_per_s: float | None = None  # forwards per second, for the hours a dry run's plan prints

    def show(self, echo: Echo) -> None:
        from extract.cost import plan

        echo(command_line("extract", self.argv))
        echo(plan(self.cfg, self.images_per_s).line())

    def run(self, echo: Echo) -> None:
        from extract.run import extract

        echo(command_line("extract", self.argv))
        echo(extract(self.cfg).line())

    def run_distributed(self, echo: Echo, procs: int) -> None:
        """The same extraction under torchrun with `procs` processes (one per GPU; on a machine
        without one, CPU processes): each rank writes its own shards, and the store equals a
        one-process run's bit for bit. Its output goes to `echo`, line by line."""
        import subprocess
        import sys

        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
        command += [str(procs), "-m", "extract", *self.argv]
        echo(f"torchrun --nproc-per-node {procs}: " + command_line("extract", self.argv))
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
            for line in child.stdout:
                echo(line.rstrip("\n"))
        if child.returncode != 0:
            raise RuntimeError(
                f"the extraction under torchrun ({procs} processes) ended with exit status {child.returncode}"
            )


def extract_config(argv: tuple[str, ...], shown: tuple[str, ...] | None = None) -> ExtractConfig:
    """The config `extract run ARGV` builds (ARGV after `run`); a bad option is a ValueError
    naming the command as `shown` (default: ARGV), e.g. without a placeholder --out."""
    import click

    from extract.cli import run as command
    from extract.models.adm_flags import take_model_flags
    from extract.store.config import from_flat

    try:
        ctx = command.make_context("extract run", list(argv[1:]))
    except click.ClickException as e:
        raise ValueError(f"{command_line('extract', shown or argv)}: {e.format_message()}") from None
    with ctx:
        params = {k: v for k, v in ctx.params.items() if k not in ("plan", "images_per_s", "config")}
        params["model_flags"] = take_model_flags(params["model_flags"])
        return from_flat(ExtractConfig, **params)


@dataclass(frozen=True)
class Command:
    """`diffprobe STAGE ARGV`, run through the stage's click group in this process."""

    stage: str
    argv: tuple[str, ...]

    def show(self, echo: Echo) -> None:
        echo(command_line(self.stage, self.argv))

    def run(self, echo: Echo) -> None:
        import click

        echo(command_line(self.stage, self.argv))
        group = importlib.import_module(f"{self.stage}.cli").cli
        try:
            group.main(args=list(self.argv), prog_name=f"python -m {self.stage}", standalone_mode=False)
        except click.ClickException as e:
            e.show()
            raise SystemExit(e.exit_code) from None
        except SystemExit as e:  # a command's own exit status (user_errors: 2)
            if e.code not in (0, None):
                raise


@dataclass(frozen=True)
class Say:
    text: str

    def show(self, echo: Echo) -> None:
        echo(self.text)

    run = show


@dataclass(frozen=True)
class Need:
    """Stop with `hint` when `path` is missing (checked when run, not in a dry run)."""

    path: Path
    hint: str

    def show(self, echo: Echo) -> None:
        pass

    def run(self, echo: Echo) -> None:
        if not exists(store_location(self.path)):
            echo(self.hint)
            raise SystemExit(1)


@dataclass(frozen=True)
class Record:
    """Write the record of the last extraction (JSON of strings) that a bare probe or cka reads."""

    path: Path
    values: dict[str, str]

    def show(self, echo: Echo) -> None:
        echo(f"recorded in {self.path}: a bare 'make probe' or 'make cka' uses these stores")

    def run(self, echo: Echo) -> None:
        self.show(echo)
        write_text(store_location(self.path), json.dumps(self.values, indent=1) + "\n")


@dataclass(frozen=True)
class Copy:
    """Copy a file, or a folder's JSON files, to `target`."""

    source: Path
    target: Path

    def show(self, echo: Echo) -> None:
        echo(f"copy {self.source} -> {self.target}")

    def run(self, echo: Echo) -> None:
        self.show(echo)
        src, dst = Path(self.source), Path(self.target)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.glob("*.json"):
                shutil.copy2(f, dst / f.name)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
