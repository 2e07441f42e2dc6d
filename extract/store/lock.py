"""One writer per store: the lock file beside it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from extract.store.errors import StoreError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """One writer per store: `<store>.lock` beside it holds the owner's host and pid.

    Created with O_EXCL, so of two extractions started on one store the second refuses
    instead of writing into shards the first is writing. A lock left by a killed run on
    this host (its pid no longer alive) is taken over, so resuming after kill -9 works."""

    def __init__(self, store: str | Path):
        self.file = Path(str(store).rstrip("/") + ".lock")
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> StoreLock:
        # a store in a folder that does not exist yet: make the folder, then take the lock
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                stale = owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", 0)))
                if stale and attempt == 0:
                    self.file.unlink(missing_ok=True)
                    continue
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown process"
                raise StoreError(
                    f"{self.file.with_suffix('')} is being written by another extraction ({who}); "
                    f"if none is running, delete {self.file}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
            self.held = True
            return self
        raise StoreError(f"cannot take the writer lock {self.file}")

    def release(self) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)
            self.held = False
