"""The store floor every stage stands on: the schema and feature key, the one resumable writer,
the window order, verify, the configs and the CLI helpers. numpy and zarr only (torch only
inside `dist`, for torchrun, and only when called)."""
