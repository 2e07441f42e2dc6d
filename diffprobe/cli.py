"""`diffprobe STAGE ...` runs `python -m STAGE ...`: the stage's own command group, imported only
when it is named, so `diffprobe probe table` loads no more than `python -m probe table` does.
`diffprobe experiment NAME` runs an experiment (diffprobe.experiments) over the three stages;
`diffprobe matrix` runs the matrix experiment with its settings as options."""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "extract": "run a network once per image and write feature stores (and sample, train the demo)",
    "probe": "train classification heads on the stores, evaluate them, fine-tune the encoder",
    "analysis": "CKA, accuracy curves, the report, Frechet distances, KID and IS",
    "experiment": "run or print (--dry-run) an experiment: the demo, the paper's rows, ...",
    "matrix": "models x datasets (x seeds) into one leaderboard; reruns only what is missing",
}
# where each command group lives: a stage's own package, or this one
MODULES = {
    "extract": "extract.cli",
    "probe": "probe.cli",
    "analysis": "analysis.cli",
    "experiment": "diffprobe.experiments.cli",
    "matrix": "diffprobe.matrix.cli",
}


def usage() -> str:
    lines = ["Usage: diffprobe STAGE [COMMAND] [OPTIONS]", "", "Stages:"]
    lines += [f"  {name:<9} {text}" for name, text in STAGES.items()]
    return "\n".join(lines + ["", "`diffprobe STAGE --help` lists a stage's commands."])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        sys.exit(2)
    group = importlib.import_module(MODULES[stage]).cli
    group.main(args=rest, prog_name=f"diffprobe {stage}")
