"""The evidence index: `evidence/index.toml`'s entries as evidence/README.md's table, with every
file under evidence/ covered by an entry (a file no entry names is an error that names it)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from analysis.docs_format import table

EVIDENCE = "evidence"
INDEX = "evidence/index.toml"
KEYS = {"files", "written_by", "backs"}


def read_index(root: Path) -> list[dict]:
    """The index's entries, each with exactly the keys `files`, `written_by` and `backs`."""
    data = tomllib.loads((root / INDEX).read_text())
    entries = data.get("entry", [])
    for i, entry in enumerate(entries):
        if set(entry) != KEYS:
            raise ValueError(f"{INDEX}: entry {i + 1} has keys {sorted(entry)}; expected {sorted(KEYS)}")
    return entries


def covers(pattern: str, path: str) -> bool:
    """Whether an index pattern (a path, a glob, or a folder ending in /) names a file's path."""
    return path.startswith(pattern) if pattern.endswith("/") else fnmatch.fnmatchcase(path, pattern)


def evidence_files(root: Path) -> list[str]:
    """Every file under evidence/, relative to it, in sorted order."""
    base = root / EVIDENCE
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def uncovered(root: Path, entries: list[dict]) -> list[str]:
    patterns = [p for e in entries for p in e["files"]]
    return [f for f in evidence_files(root) if not any(covers(p, f) for p in patterns)]


def evidence_index(root: Path) -> str:
    """evidence/README.md's table; raises ValueError naming the files that no entry covers."""
    entries = read_index(root)
    missing = uncovered(root, entries)
    if missing:
        raise ValueError(f"{INDEX} covers no entry for: {', '.join(missing)} (add an entry or a pattern)")
    files = evidence_files(root)
    rows = []
    for entry in entries:
        names = []
        for pattern in entry["files"]:
            shown = (
                f"[`{pattern}`]({pattern})" if pattern.endswith("/") or "*" not in pattern else f"`{pattern}`"
            )
            names.append(shown if any(covers(pattern, f) for f in files) else f"`{pattern}` (no file yet)")
        rows.append([", ".join(names), entry["written_by"], entry["backs"]])
    return table(["files", "written by", "backs"], rows)
