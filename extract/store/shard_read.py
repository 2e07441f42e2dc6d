"""Reading a feature array's rows straight from its shard files.

zarr-python decodes a sharded array chunk by chunk through asyncio and several buffer
copies; on a warm page cache that runs at a fraction of the speed of a plain file read.
A diffprobe feature array has one simple shape on disk, which this module reads itself:

    one file per row-shard, c/<s>/0/0/...; in it the inner chunks (whole rows, C order,
    little-endian), each followed by its CRC32C, and at the end the index: for every
    inner chunk (offset, nbytes) as little-endian uint64 (2**64-1 twice: never written,
    reads as the fill value), followed by the index's own CRC32C.

Each chunk is read with one `preadv` straight into its place in the output array, and its
checksum is verified there, so a read is one copy from the page cache plus one CRC pass.
Chunks of different shards are read by a small thread pool. A store on object storage
(zarr's ObjectStore over obstore) is read the same way with ranged GETs: one for a shard's
index (a suffix range), then one per chunk, concurrently (obstore's `get_ranges`), each copied
once from its response into its place and checked there; shards are fetched in parallel.
No local cache is kept. Arrays whose codecs are not
exactly (bytes, crc32c) inside sharding (stores written with zstd, by older versions) and
requests other than row slices go through zarr, which reads every layout; the values are
the same either way (tested).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

_EMPTY = np.uint64(2**64 - 1)
_THREADS = min(4, os.cpu_count() or 1)
_POOL: ThreadPoolExecutor | None = None  # one pool for every read, made on first use
# shards fetched at once from object storage: waiting on the network, not the CPU
_URL_THREADS = 8
_URL_POOL: ThreadPoolExecutor | None = None

try:  # the `crc32c` package: hardware CRC32C at about 15 GB/s here, without the GIL
    from crc32c import crc32c as _crc32c
except ImportError:  # google-crc32c (zarr's own dependency): the same values, about 4.5 GB/s
    from google_crc32c import value as _crc32c


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_THREADS, thread_name_prefix="shard-read")
    return _POOL


def url_pool() -> ThreadPoolExecutor:
    global _URL_POOL
    if _URL_POOL is None:
        _URL_POOL = ThreadPoolExecutor(_URL_THREADS, thread_name_prefix="shard-get")
    return _URL_POOL


class ChecksumError(ValueError):
    """A chunk or shard index whose bytes do not match their CRC32C."""


def _fast_layout(array: zarr.Array) -> tuple[Path | tuple[Any, str], int] | None:
    """(where, inner chunk rows) when the array is in the layout this module reads, else None;
    where is the array's folder, or (obstore store, the array's key prefix) for object storage."""
    meta = array.metadata
    codecs = getattr(meta, "codecs", ())
    if sys.byteorder != "little" or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    shard = codecs[0]
    inner_ok = (
        len(shard.codecs) == 2
        and isinstance(shard.codecs[0], BytesCodec)
        and isinstance(shard.codecs[1], Crc32cCodec)
    )
    index_ok = (
        len(shard.index_codecs) == 2
        and isinstance(shard.index_codecs[1], Crc32cCodec)
        and shard.index_location.value == "end"
    )
    store = array.store_path.store
    remote = isinstance(store, zarr.storage.ObjectStore)
    if not (inner_ok and index_ok and (remote or isinstance(store, zarr.storage.LocalStore))):
        return None
    if getattr(shard.codecs[0], "endian", None) is not None and shard.codecs[0].endian.value != "little":
        return None
    shape, shard_shape, chunk_shape = array.shape, meta.chunk_grid.chunk_shape, shard.chunk_shape
    if (
        tuple(shard_shape[1:]) != tuple(shape[1:])
        or tuple(chunk_shape[1:]) != tuple(shape[1:])
        or shard_shape[0] % chunk_shape[0]
    ):
        return None
    zeros = (0,) * (len(shape) - 1)
    if meta.encode_chunk_key((1, *zeros)) != "/".join(["c", "1", *map(str, zeros)]):
        return None
    if remote:
        return (store.store, array.store_path.path), int(chunk_shape[0])
    return Path(store.root) / array.store_path.path, int(chunk_shape[0])


class FeatureArray:
    """One feature array of a store: `shape`, `dtype`, and rows by slicing (`a[lo:hi]`, `a[:]`)."""

    def __init__(self, array: zarr.Array):
        self.zarr = array
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(str(array.dtype))
        self.ndim = len(self.shape)
        self.shard_rows = int(array.metadata.chunk_grid.chunk_shape[0])
        self.fill_value = array.metadata.fill_value
        self._layout = _fast_layout(array)

    @property
    def fast(self) -> bool:
        """Whether row slices are read from the shard files directly (else through zarr)."""
        return self._layout is not None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item):
        if self._layout is not None and isinstance(item, slice) and item.step in (None, 1):
            start, stop, _ = item.indices(self.shape[0])
            return self.read(start, max(start, stop))
        return self.zarr[item]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new (stop - start, ...) array, every chunk's CRC32C checked."""
        if self._layout is None:
            return np.asarray(self.zarr[start:stop])
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        if stop <= start:
            return out
        where, chunk_rows = self._layout
        if not isinstance(where, Path):
            return self._read_remote(out, start, stop)
        tasks, fds = [], []
        try:
            for s in range(start // self.shard_rows, (stop - 1) // self.shard_rows + 1):
                lo, hi = max(start, s * self.shard_rows), min(stop, (s + 1) * self.shard_rows)
                path = self._shard_file(s)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # a shard never written reads as the fill value, as in zarr
                    out[lo - start : hi - start] = self.fill_value
                    continue
                fds.append(fd)
                index = self._index(fd, path, self.shard_rows // chunk_rows)
                for c, (offset, nbytes) in enumerate(index):
                    c_lo = s * self.shard_rows + c * chunk_rows
                    a, b = max(lo, c_lo), min(hi, c_lo + chunk_rows)
                    if a < b:
                        tasks.append((fd, path, c, c_lo, a, b, offset, nbytes))
            if len(tasks) == 1:
                self._read_chunk(out, start, *tasks[0])
            elif tasks:
                list(_pool().map(lambda task: self._read_chunk(out, start, *task), tasks))
        finally:
            for fd in fds:
                os.close(fd)
        return out

    def _shard_file(self, s: int) -> Path:
        folder, _ = self._layout
        return folder.joinpath("c", str(s), *["0"] * (self.ndim - 1))

    def _read_chunk(
        self,
        out: np.ndarray,
        start: int,
        fd: int,
        path: Path,
        c: int,
        c_lo: int,
        a: int,
        b: int,
        offset,
        nbytes,
    ) -> None:
        """Rows [a, b) of inner chunk c (whose first row is c_lo) into out[a - start : b - start]."""
        _, chunk_rows = self._layout
        if offset == _EMPTY and nbytes == _EMPTY:  # never written: the fill value, as in zarr
            out[a - start : b - start] = self.fill_value
            return
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        if int(nbytes) != chunk_rows * row_bytes + 4:
            raise ChecksumError(
                f"{path}: chunk {c} holds {int(nbytes)} bytes, expected {chunk_rows * row_bytes + 4}"
            )
        crc = bytearray(4)
        whole = a == c_lo and b == c_lo + chunk_rows
        # a whole chunk lands in place; a partial one goes through a buffer of one chunk
        target = out[a - start : b - start] if whole else np.empty((chunk_rows, *self.shape[1:]), self.dtype)
        got = os.preadv(fd, [memoryview(target).cast("B"), crc], int(offset))
        if got != int(nbytes):
            raise ChecksumError(f"{path}: chunk {c} is truncated ({got} of {int(nbytes)} bytes)")
        if _crc32c(target.reshape(-1).view(np.uint8)) != int.from_bytes(crc, "little"):
            raise ChecksumError(f"{path}: chunk {c} does not match its CRC32C checksum (the file is corrupt)")
        if not whole:
            out[a - start : b - start] = target[a - c_lo : b - c_lo]

    @staticmethod
    def _index(fd: int, path: Path, n_chunks: int) -> np.ndarray:
        size = os.fstat(fd).st_size
        length = 16 * n_chunks + 4
        if size < length:
            raise ChecksumError(f"{path}: shard file is truncated ({size} bytes)")
        raw = os.pread(fd, length, size - length)
        if _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise ChecksumError(
                f"{path}: shard index does not match its CRC32C checksum (the file is corrupt)"
            )
        return np.frombuffer(raw[:-4], dtype="<u8").reshape(n_chunks, 2)

    # ------------------------------------------------------------ object storage
    def _read_remote(self, out: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) from shard objects, shards in parallel (`_fetch_shard`)."""
        (_, folder), chunk_rows = self._layout
        n_chunks = self.shard_rows // chunk_rows
        plans = []  # (shard object key, [(chunk, its first row, rows [a, b) wanted)])
        for s in range(start // self.shard_rows, (stop - 1) // self.shard_rows + 1):
            lo, hi = max(start, s * self.shard_rows), min(stop, (s + 1) * self.shard_rows)
            slots = []
            for c in range(n_chunks):
                c_lo = s * self.shard_rows + c * chunk_rows
                if max(lo, c_lo) < min(hi, c_lo + chunk_rows):
                    slots.append((c, c_lo, max(lo, c_lo), min(hi, c_lo + chunk_rows)))
            plans.append(("/".join([folder, "c", str(s), *["0"] * (self.ndim - 1)]), slots))
        if len(plans) == 1:
            self._fetch_shard(out, start, *plans[0])
        else:
            list(url_pool().map(lambda plan: self._fetch_shard(out, start, *plan), plans))
        return out

    def _fetch_shard(self, out: np.ndarray, start: int, key: str, slots: list) -> None:
        """One shard's wanted chunks into out, each checked against its CRC32C where it lands.

        A read that takes the shard's last chunk (any read of whole shards) asks for every chunk
        at the offset a shard written whole has (chunk c at c times its size), the index joined
        to the last chunk's range (they are adjacent): one batch of concurrent ranged GETs and no
        round trip before it. The index then confirms each guess; a chunk found elsewhere (a
        shard written otherwise) is fetched again where the index says. Other reads fetch the
        index first (a suffix GET), then the chunks it places."""
        import obstore

        (store, _), chunk_rows = self._layout
        n_chunks = self.shard_rows // chunk_rows
        chunk_bytes = chunk_rows * self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64)) + 4
        index_bytes = 16 * n_chunks + 4
        guessed, raw = None, None
        if slots[-1][0] == n_chunks - 1:
            starts = [c * chunk_bytes for c, *_ in slots]
            lengths = [chunk_bytes] * (len(slots) - 1) + [chunk_bytes + index_bytes]
            try:
                guessed = obstore.get_ranges(store, key, starts=starts, lengths=lengths, coalesce=0)
            except Exception as e:  # noqa: BLE001 - past the object's end: the index says where
                if _never_written(e):
                    return self._fill(out, start, slots)
            if guessed is not None and len(guessed[-1]) == chunk_bytes + index_bytes:
                raw = bytes(memoryview(guessed[-1])[chunk_bytes:])
        if raw is None or _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            try:
                raw = bytes(obstore.get(store, key, options={"range": {"suffix": index_bytes}}).bytes())
            except FileNotFoundError as e:
                if not _never_written(e):
                    raise
                return self._fill(out, start, slots)
            if len(raw) < index_bytes or _crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise ChecksumError(
                    f"{key}: shard index does not match its CRC32C checksum (the object is corrupt)"
                )
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(n_chunks, 2)
        datas, refetch = [], []
        for i, (c, _, a, b) in enumerate(slots):
            offset, nbytes = index[c]
            if offset == _EMPTY and nbytes == _EMPTY:  # never written: the fill value, as in zarr
                out[a - start : b - start] = self.fill_value
                datas.append(None)
                continue
            if int(nbytes) != chunk_bytes:
                raise ChecksumError(f"{key}: chunk {c} holds {int(nbytes)} bytes, expected {chunk_bytes}")
            if guessed is not None and int(offset) == c * chunk_bytes:
                datas.append(memoryview(guessed[i])[:chunk_bytes])
            else:
                datas.append(None)
                refetch.append((i, int(offset)))
        if refetch:
            got = obstore.get_ranges(
                store, key, starts=[o for _, o in refetch], lengths=[chunk_bytes] * len(refetch), coalesce=0
            )
            for (i, _), data in zip(refetch, got):
                datas[i] = memoryview(data)
        for (c, c_lo, a, b), data in zip(slots, datas):
            if data is not None:
                self._check_and_place(out, start, key, c, c_lo, a, b, data, chunk_bytes)

    def _fill(self, out: np.ndarray, start: int, slots: list) -> None:
        """A shard never written reads as the fill value, as in zarr."""
        for _, _, a, b in slots:
            out[a - start : b - start] = self.fill_value

    def _check_and_place(self, out, start, key, c, c_lo, a, b, data, nbytes: int) -> None:
        got = np.frombuffer(data, dtype=np.uint8)
        if got.size != nbytes:
            raise ChecksumError(f"{key}: chunk {c} is truncated ({got.size} of {nbytes} bytes)")
        if _crc32c(got[:-4]) != int.from_bytes(got[-4:].tobytes(), "little"):
            raise ChecksumError(
                f"{key}: chunk {c} does not match its CRC32C checksum (the object is corrupt)"
            )
        rows = got[:-4].view(self.dtype).reshape(-1, *self.shape[1:])
        out[a - start : b - start] = rows[a - c_lo : b - c_lo]


def _never_written(e: BaseException) -> bool:
    """A missing object (a shard never written), not a missing bucket or another failure."""
    return isinstance(e, FileNotFoundError) and ("<Code>" not in str(e) or "<Code>NoSuchKey" in str(e))
