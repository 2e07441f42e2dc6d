"""obstore against fsspec/s3fs as zarr's object-storage layer, on a local S3-protocol server.

Writes and reads the same sharded fp16 array (as diffprobe's stores hold features: 8,192-row
shards of 1,024-row chunks, CRC32C per chunk) through zarr with each library, and reads it
with diffprobe's shard reader. Run: PYTHONPATH=<a folder with s3fs> python evidence/bench/s3_libraries.py
(s3fs is not one of diffprobe's dependencies; it was installed with `pip install --target`).
Prints and writes evidence/bench/s3-libraries.json. Rates are MB/s of the array's bytes, best of 3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def best(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import obstore.store
    import s3fs
    import zarr
    from zarr.codecs import Crc32cCodec
    from zarr.storage import FsspecStore, ObjectStore

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        req = urllib.request.Request(f"{endpoint}/bench", method="PUT")
        urllib.request.urlopen(req)
        os.environ.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1")
        rows, width = 16384, 4096
        data = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float16)
        mb = data.nbytes / 1e6
        stores = {
            "obstore": ObjectStore(
                obstore.store.S3Store(
                    "bench", prefix="ob", endpoint=endpoint, client_options={"allow_http": True}
                )
            ),
            "fsspec/s3fs": FsspecStore(
                s3fs.S3FileSystem(asynchronous=True, endpoint_url=endpoint, key="k", secret="s"),
                path="bench/fs",
            ),
        }
        result = {
            "array": f"{rows} x {width} fp16 ({mb:.0f} MB), shards of 8192 rows, chunks of 1024, CRC32C"
        }
        for name, store in stores.items():  # noqa: B007 - each closure binds its own store

            def write(store=store):
                group = zarr.open_group(store, mode="w")
                arr = group.create_array(
                    "x",
                    shape=data.shape,
                    dtype="float16",
                    chunks=(1024, width),
                    shards=(8192, width),
                    compressors=[Crc32cCodec()],  # as diffprobe's feature arrays: CRC32C per chunk
                )
                arr[:] = data

            def read(store=store):
                got = zarr.open_array(store, path="x", mode="r")[:]
                assert np.array_equal(got, data)

            result[name] = {"write_MBps": round(mb / best(write), 1), "read_MBps": round(mb / best(read), 1)}
        # diffprobe's reader over the obstore-written array
        from extract.store.shard_read import FeatureArray

        arr = FeatureArray(zarr.open_array(stores["obstore"], path="x", mode="r"))

        def ours():
            assert np.array_equal(arr.read(0, rows), data)

        assert arr.fast, "the shard reader did not take its ranged-GET path"
        result["diffprobe shard reader (obstore ranged GETs)"] = {"read_MBps": round(mb / best(ours), 1)}
        result["versions"] = {
            "s3fs": s3fs.__version__,
            "zarr": zarr.__version__,
            "obstore": obstore.__version__,
        }
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(result, indent=1))
    Path(__file__).with_name("s3-libraries.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
