"""One writer per store: the lock beside it, a file or (for a store at a URL) an object."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

from extract.store.errors import StoreError
from extract.store.location import StoreURL, is_storage_error, storage_error, store_location


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """One writer per store: `<store>.lock` beside it holds the owner's host, pid and a token.

    Local: created with O_EXCL, so of two extractions started on one store the second refuses
    instead of writing into shards the first is writing.

    At a URL: an object created with a conditional PUT (`If-None-Match: *`, obstore's
    mode="create"); the server stores it only if no object has that key, atomically, so of two
    writers exactly one gets it. AWS S3 (since August 2024), MinIO, Cloudflare R2 and moto's
    server honour it (tested against moto); obstore asks GCS and Azure the same through their own
    preconditions (not tested here). A server that ignores the header would let both PUTs succeed; the
    writer reads the lock back and refuses if the token is not its own, which catches that
    unless the two PUTs and reads interleave exactly.

    A lock left by a killed run on this host (its pid no longer alive) is taken over, so
    resuming after kill -9 works. Taking over is a read, a delete and a create, not one step: two
    resumes of one killed run started at the same instant could both pass it."""

    def __init__(self, store: str | Path | StoreURL):
        where = store_location(store)
        self.url = where.with_name(where.name + ".lock") if isinstance(where, StoreURL) else None
        self.file = Path(str(where).rstrip("/") + ".lock") if self.url is None else None
        self.folder = self.url.parent.objects if self.url is not None else None  # obstore store
        self.token = uuid.uuid4().hex
        self.held = False

    @property
    def where(self) -> str:
        return str(self.url if self.url is not None else self.file)

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}).encode()

    def _owner(self) -> dict:
        try:
            if self.url is not None:
                import obstore

                raw = bytes(obstore.get(self.folder, self.url.name).bytes())
            else:
                raw = self.file.read_bytes()
            return json.loads(raw)
        except Exception:  # noqa: BLE001 - gone or unreadable: no owner known
            return {}

    def _create(self) -> bool:
        """Take the lock if nobody holds it; False if it exists."""
        if self.url is None:
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._record())
            return True
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.folder, self.url.name, self._record(), mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as e:
            if is_storage_error(e) or isinstance(e, OSError):
                raise storage_error(e, self.url) from None
            raise
        if self._owner().get("token") != self.token:  # a server that ignored If-None-Match
            return False
        return True

    def _delete(self) -> None:
        if self.url is None:
            self.file.unlink(missing_ok=True)
            return
        import obstore

        obstore.delete(self.folder, self.url.name)

    def acquire(self) -> StoreLock:
        if self.file is not None:
            # a store in a folder that does not exist yet: make the folder, then take the lock
            self.file.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            if self._create():
                self.held = True
                return self
            owner = self._owner()
            stale = owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", 0)))
            if stale and attempt == 0:
                self._delete()
                continue
            who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown process"
            raise StoreError(
                f"{self.where.removesuffix('.lock')} is being written by another extraction ({who}); "
                f"if none is running, delete {self.where}"
            )
        raise StoreError(f"cannot take the writer lock {self.where}")

    def release(self) -> None:
        if self.held:
            if self._owner().get("token", self.token) == self.token:
                self._delete()
            self.held = False
