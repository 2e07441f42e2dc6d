"""Probe benchmarks, each imported only by its own command."""
