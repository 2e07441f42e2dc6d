"""TensorBoard event files written with the standard library: the CRC is CRC-32C (its published
check value), and a plain protobuf reader written here gets back every scalar at its step."""

from __future__ import annotations

import struct

import pytest

from probe.tensorboard import crc32c, masked_crc, write_history


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, object]]:
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = struct.unpack("<d", buf[i : i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", buf[i : i + 4])[0], i + 4
        else:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        out.append((field, value))
    return out


def read_events(path) -> list[bytes]:
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        header = data[i : i + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc(header)
        body = data[i + 12 : i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == masked_crc(body)
        events.append(body)
        i += 16 + n
    return events


def test_crc32c_has_its_published_check_value():
    assert crc32c(b"123456789") == 0xE3069283 and crc32c(b"") == 0


def test_a_history_reads_back_at_its_steps(tmp_path):
    path = write_history(
        tmp_path / "tb",
        [
            {"epoch": 1, "train_loss": 0.5, "val_top1": [80.0, 70.0], "note": "x"},
            {"epoch": 2, "train_loss": 0.25, "val_top1": [85.0, 71.0]},
        ],
    )
    first, *events = read_events(path)
    assert (3, b"brain.Event:2") in _fields(first)
    got = {}
    for body in events:
        fields = dict(_fields(body))
        for field, value in _fields(fields[5]):
            assert field == 1
            tag = dict(_fields(value))
            got[(fields[2], tag[1].decode())] = tag[2]
    assert got == {
        (1, "train_loss"): 0.5,
        (1, "val_top1/0"): 80.0,
        (1, "val_top1/1"): 70.0,
        (2, "train_loss"): 0.25,
        (2, "val_top1/0"): 85.0,
        (2, "val_top1/1"): 71.0,
    }


def test_probe_train_writes_its_history_for_tensorboard(stores, tmp_path):
    from probe.cli import main

    with pytest.raises(SystemExit) as done:
        main(
            [
                "train",
                "--train",
                str(stores / "train.zarr"),
                "--test",
                str(stores / "test.zarr"),
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--results",
                str(tmp_path / "res"),
                "--name",
                "tb",
                "--no-progress",
                "--tensorboard",
                str(tmp_path / "tb"),
            ]
        )
    assert done.value.code == 0
    (path,) = (tmp_path / "tb" / "tb").glob("events.out.tfevents.*")
    steps = [dict(_fields(e)).get(2) for e in read_events(path)[1:]]
    assert steps == [1, 2]
