"""diffprobe analysis stage: CKA, plots and the report (to come)."""
