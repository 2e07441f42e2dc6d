"""The `diffprobe` command: the three stages under one name (`diffprobe extract ...`,
`diffprobe probe ...`, `diffprobe analysis ...`), each loaded only when asked for."""
