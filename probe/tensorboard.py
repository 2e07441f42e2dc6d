"""A run's per-epoch history as TensorBoard event files (`--tensorboard DIR`), written with the
standard library: TensorBoard itself is not needed to write them, only to view them.

An event file is a sequence of records (length, masked CRC-32C of the length, the serialized
`Event` protobuf, masked CRC-32C of it); the first event names the file version, the others
carry scalar summaries. Only the few protobuf fields used are encoded here: Event.wall_time (1,
double), Event.step (2, int64), Event.file_version (3, string), Event.summary (5), Summary.value
(1), Summary.Value.tag (1, string) and Summary.Value.simple_value (2, float).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # the Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def event(
    wall_time: float, step: int = 0, file_version: str | None = None, scalars: dict[str, float] | None = None
) -> bytes:
    """One serialized Event."""
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes(3, file_version.encode())
    if scalars:
        values = b"".join(
            _bytes(1, _bytes(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        out += _bytes(5, values)
    return out


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def write_history(folder: str | Path, rows: list[dict], step_key: str = "epoch", prefix: str = "") -> Path:
    """Every numeric field of each history row as a scalar at step row[step_key]; lists become
    one scalar per element (`tag/0`, `tag/1`, ...). Returns the event file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.diffprobe"
    now = time.time()
    with open(path, "wb") as f:
        f.write(record(event(now, 0, file_version="brain.Event:2")))
        for row in rows:
            scalars = {}
            for name, value in row.items():
                if name == step_key:
                    continue
                items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
                for i, v in items:
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        scalars[f"{prefix}{name}" + ("" if i is None else f"/{i}")] = v
            if scalars:
                f.write(record(event(now, int(row[step_key]), scalars=scalars)))
    return path
