"""Imports every module of experiments, so each registers itself (the registry imports this)."""

from diffprobe.experiments import core, paper, tools  # noqa: F401
from diffprobe.experiments import sweeps, tables  # noqa: F401
from diffprobe.experiments import finetuning, generation, matrix  # noqa: F401
