"""The analysis commands, grouped by topic; `analysis.cli` registers them on one click group.
Each command imports its library code when it runs, so `--help` stays light."""
