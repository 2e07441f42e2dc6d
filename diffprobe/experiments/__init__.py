"""Experiments as typed Python: each a generator function of its settings that yields the stages'
steps (diffprobe.experiments.steps), registered by name (diffprobe.experiments.registry).
Settings and rows are flat TOML values (settings.toml, experiments.toml). Run one with
`diffprobe experiment NAME` (or `make NAME`); `--dry-run` prints its commands and plans."""
