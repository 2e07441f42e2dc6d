"""The torch-free names the CLI offers are the registries' own."""

from probe.config import BASELINE_NAMES, HEAD_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES
from probe.grid import OPTIMIZERS, SCHEDULES
from probe.heads import BASELINES, HEADS


def test_cli_names_match_the_registries():
    assert HEAD_NAMES == tuple(HEADS) and BASELINE_NAMES == tuple(BASELINES)
    assert OPTIMIZER_NAMES == tuple(OPTIMIZERS) and SCHEDULE_NAMES == tuple(SCHEDULES)
