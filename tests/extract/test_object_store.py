"""Stores at URLs: the location parser (fast), and writing, resuming, locking, verifying and reading
stores on a real S3-protocol server (moto's standalone `moto_server` on a random loopback port,
started once for this module and stopped at its end; no client is patched in-process)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from extract.cli import cli as extract_cli
from extract.store import location
from extract.store.config import StoreOptions
from extract.store.errors import StoreError
from extract.store.location import StoreURL, one_line, store_location
from extract.store.lock import StoreLock
from extract.store.schema import FeatureKey, FeatureStore, is_store
from extract.store.shard_read import ChecksumError
from extract.store.verify import verify_store
from tests.conftest import run_tiny

# ---------------------------------------------------------------- the location (no server)


def test_store_location_reads_paths_and_urls():
    url = store_location("s3://bucket/some/prefix/name.zarr/")
    assert (
        url == StoreURL("s3", "bucket", "some/prefix/name.zarr")
        and str(url) == "s3://bucket/some/prefix/name.zarr"
    )
    assert (
        url.name == "name.zarr"
        and str(url.parent / "latents" / "x.zarr") == "s3://bucket/some/prefix/latents/x.zarr"
    )
    assert str(url.with_name("name.zarr.lock")) == "s3://bucket/some/prefix/name.zarr.lock"
    assert store_location("gs://b/x.zarr") == StoreURL("gs", "b", "x.zarr")
    assert store_location("file:///tmp/a.zarr") == Path("/tmp/a.zarr")
    assert store_location("cache/a.zarr") == Path("cache/a.zarr")
    assert store_location(Path("/x/a.zarr")) == Path("/x/a.zarr")
    assert store_location(url) is url
    assert not hasattr(url, "__fspath__")  # never usable as a file name
    with pytest.raises(TypeError):
        Path(url)


@pytest.mark.parametrize(
    "bad, words",
    [
        (Path("s3://bar/px.zarr"), "lost its '//'"),  # what Path() makes of a URL: "s3:/bar/px.zarr"
        ("s3:/bar/px.zarr", "lost its '//'"),
        ("ftp://host/x.zarr", "unknown store scheme"),
        ("s3:///x.zarr", "no bucket"),
        ("file://otherhost/x.zarr", "names no host"),
    ],
)
def test_store_location_refuses_what_would_be_written_elsewhere(bad, words):
    with pytest.raises(ValueError, match=words):
        store_location(bad)


def test_a_missing_object_storage_library_names_the_extra(monkeypatch):
    real = location.importlib.util.find_spec
    monkeypatch.setattr(
        location.importlib.util, "find_spec", lambda name: None if name == "obstore" else real(name)
    )
    with pytest.raises(ValueError, match=r"pip install 'diffprobe\[s3\]'"):
        store_location("s3://bucket/x.zarr")


def test_the_url_bench_table_shows_each_reader_beside_plain_gets():
    from extract.bench.io_url import format_url

    part = {
        "store": "s3://b/x.zarr",
        "key": "t10/b9/full",
        "rows": 4096,
        "objects": 2,
        "mb": 33.6,
        "chunk_bytes": 4194308,
        "repeats": 3,
        "results": [
            {"reader": "plain concurrent ranged GETs", "mb_per_s": 1000.0, "of_plain": 1.0},
            {"reader": "diffprobe, all rows", "mb_per_s": 950.0, "of_plain": 0.95},
        ],
    }
    lines = format_url(part).splitlines()
    assert "s3://b/x.zarr t10/b9/full: 4096 rows in 2 shard objects (33.6 MB)" in lines[0]
    assert lines[-1].split()[-2:] == ["950", "95%"] and len(lines) == 4


def test_a_url_pickles_as_its_fields():
    import pickle

    url = store_location("s3://bucket/p/x.zarr")
    url.__dict__["objects"] = object()  # a client made on first use is never pickled
    back = pickle.loads(pickle.dumps(url))
    assert back == url and "objects" not in back.__dict__


def test_store_options_keep_a_url_whole():
    assert StoreOptions(out="s3://b/p/x.zarr").out == StoreURL("s3", "b", "p/x.zarr")
    with pytest.raises(ValueError, match="lost its"):
        StoreOptions(out=Path("s3://b/p/x.zarr"))


def test_storage_errors_become_one_line():
    xml = (
        "Object at location zarr.json not found: Error performing GET http://h/nob/zarr.json - "
        'Server returned non-2xx status code: 404 Not Found: <?xml version="1.0"?>\n<Error>'
        "<Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>"
        "<BucketName>nob</BucketName></Error>"
    )
    line = one_line(FileNotFoundError(xml))
    assert line == "object storage: bucket nob: the bucket does not exist" and "\n" not in line
    assert one_line(ValueError("plain\nkept")) == "plain\nkept"  # other errors as they are


def test_a_url_never_becomes_a_local_folder(tmp_path, fmnist_env, monkeypatch):
    """The bug this guards: `--out s3://...` once wrote a local folder named `s3:` and exited 0."""
    with socket.socket() as s:  # a port nothing listens on: a network error, quickly
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in _credentials(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    args = ["pixels", "--data", "fashion-mnist", "--limit", "20", "--no-progress", "--out"]
    got = CliRunner().invoke(extract_cli, [*args, "s3://bar/px_train.zarr"])
    assert got.exit_code == 2 and "cannot reach" in got.output and len(got.output.strip().splitlines()) == 1
    got = CliRunner().invoke(extract_cli, [*args, "s3:/bar/px_train.zarr"])
    assert got.exit_code == 2 and "lost its '//'" in got.output
    assert list(tmp_path.iterdir()) == []  # no folder `s3:`, nothing at all


# ---------------------------------------------------------------- a real S3-protocol server


def _credentials(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


@pytest.fixture(scope="module")
def s3_server():
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server is not installed (pip install -e '.[test]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    """A new empty bucket, with the environment pointing at the server."""
    for name, value in _credentials(s3_server).items():
        monkeypatch.setenv(name, value)
    name = f"b{uuid.uuid4().hex[:16]}"
    urllib.request.urlopen(urllib.request.Request(f"{s3_server}/{name}", method="PUT"))
    return name


def objects(url: str) -> dict[str, bytes]:
    """Every object under a URL, key -> bytes."""
    import obstore

    where = store_location(url)
    return {k: bytes(obstore.get(where.objects, k).bytes()) for k, _ in location.list_objects(where)}


def data_objects(url: str) -> dict[str, bytes]:
    """A store's objects but its root metadata (which dates the run)."""
    return {k: v for k, v in objects(url).items() if k != "zarr.json"}


@pytest.mark.slow
def test_pixels_at_a_url_equal_a_local_store_and_read_fast(tmp_path, fmnist_env, bucket, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"s3://{bucket}/px/train.zarr"
    args = ["pixels", "--data", "fashion-mnist", "--limit", "60", "--shard-rows", "16", "--no-progress"]
    assert CliRunner().invoke(extract_cli, [*args, "--out", url]).exit_code == 0
    assert CliRunner().invoke(extract_cli, [*args, "--out", str(tmp_path / "local.zarr")]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.zarr"]  # nothing else written locally
    remote, local = FeatureStore.open(url), FeatureStore.open(tmp_path / "local.zarr")
    assert remote.complete and isinstance(remote.path, StoreURL)
    key = remote.keys()[0]
    array = remote.array(key)
    assert array.fast  # ranged GETs, not zarr
    reference = local.array(key)[:]
    np.testing.assert_array_equal(array[:], reference)
    np.testing.assert_array_equal(array[5:37], reference[5:37])  # rows across shard and chunk edges
    np.testing.assert_array_equal(np.asarray(array.zarr[:]), reference)
    np.testing.assert_array_equal(remote.labels(), local.labels())
    got = CliRunner().invoke(extract_cli, ["verify", url])
    assert got.exit_code == 0 and got.output.strip() == f"{url}: ok"
    assert not objects(f"s3://{bucket}/px").get("train.zarr.lock")  # the writer let go of its lock


@pytest.mark.slow
def test_verify_finds_a_flipped_byte_over_the_network(fmnist_env, bucket):
    import obstore

    url = f"s3://{bucket}/flip.zarr"
    run_tiny(url, limit=32, ts=(10,), blocks=(3,), pools=(None,))
    assert verify_store(url) == []
    store = FeatureStore.open(url)
    key = store.keys()[0]
    shard = f"{key.path}/c/1/0/0/0"
    where = store_location(url)
    raw = bytearray(obstore.get(where.objects, shard).bytes())
    raw[100] ^= 0x01  # inside the first chunk's data
    obstore.put(where.objects, shard, bytes(raw))
    problems = verify_store(url)
    assert len(problems) == 1 and "shard 1 (rows 16-31) unreadable" in problems[0], problems
    assert "checksum" in problems[0].lower() or "crc32c" in problems[0].lower(), problems
    with pytest.raises(ChecksumError, match="CRC32C"):
        store.array(key)[:]
    np.testing.assert_array_equal(
        store.array(key)[:16], np.asarray(store.array(key).zarr[:16])
    )  # shard 0 reads


@pytest.mark.slow
def test_two_writers_of_one_store_are_refused(fmnist_env, bucket):
    url = f"s3://{bucket}/locked.zarr"
    first = StoreLock(url).acquire()  # held by this (live) process, as by a running extraction
    with pytest.raises(StoreError, match=f"{url} is being written by another extraction"):
        run_tiny(url, limit=16)
    assert not is_store(url)
    first.release()
    assert objects(f"s3://{bucket}") == {}  # the lock was an object, and it is gone
    # writers racing for one lock: the conditional PUT lets exactly one take it
    race = f"s3://{bucket}/race.zarr"
    won, errors = [], []

    def take():
        try:
            won.append(StoreLock(race).acquire())
        except StoreError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(errors) == 7 and all("being written by another" in e for e in errors)
    assert json.loads(objects(f"s3://{bucket}")["race.zarr.lock"])["token"] == won[0].token


def _cli(url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "extract",
        "run",
        "--model",
        "tiny",
        "--random-init",
        "--out",
        url,
        "-t",
        "10",
        "-b",
        "7",
        "--pool",
        "2",
        "--shard-rows",
        "8",
        "--micro-batch",
        "4",
        "--batch-size",
        "4",
        "--no-progress",
    ]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_is_bit_identical(fmnist_env, bucket):
    env = {**os.environ, "FASHION_MNIST_DIR": str(fmnist_env), "OMP_NUM_THREADS": "1"}
    whole, cut = f"s3://{bucket}/whole.zarr", f"s3://{bucket}/cut.zarr"
    subprocess.run(_cli(whole), check=True, env=env, capture_output=True)
    killed = False
    for attempt in range(5):  # a run can finish between two polls: try again on a fresh store
        cut = f"s3://{bucket}/cut{attempt}.zarr"
        proc = subprocess.Popen(_cli(cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                done = FeatureStore.open(cut).done_shards()
            except Exception:  # noqa: BLE001 - not there yet
                done = np.zeros(1, bool)
            if 2 <= done.sum() < len(done):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
        proc.wait()
        if killed:
            break
    assert killed, "the run finished before it could be killed, five times"
    assert not FeatureStore.open(cut).complete  # a store half-written at a URL never looks complete
    assert f"{cut.rsplit('/', 1)[1]}.lock" in objects(f"s3://{bucket}")  # left by the killed run
    subprocess.run(_cli(cut), check=True, env=env, capture_output=True)
    assert FeatureStore.open(cut).complete and verify_store(cut) == []
    assert data_objects(cut) == data_objects(whole)


@pytest.mark.slow
def test_probe_cka_and_verify_read_a_store_at_a_url_and_write_nothing_there(tmp_path, fmnist_env, bucket):
    from analysis.cli import cli as analysis_cli
    from probe.cli import cli as probe_cli

    train, test = f"s3://{bucket}/c/train.zarr", f"s3://{bucket}/c/test.zarr"
    run_tiny(train, limit=40, ts=(10,), blocks=(3, 7), pools=(1,))
    run_tiny(test, split="test", limit=20, ts=(10,), blocks=(3, 7), pools=(1,))
    before = objects(f"s3://{bucket}")
    args = ["train", "--train", train, "--test", test, "--head", "logreg", "--no-progress"]
    got = CliRunner().invoke(probe_cli, [*args, "--results", str(tmp_path / "results"), "--name", "url"])
    assert got.exit_code == 0, got.output
    record = json.loads((tmp_path / "results" / "url.json").read_text())
    assert train in json.dumps(record) and "testing" not in json.dumps(record)  # the URL, no credentials
    # a linear head streamed window by window from the URL ends where a preloaded one does
    linear = [
        "train",
        "--train",
        train,
        "--test",
        test,
        "--head",
        "linear",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    for how in ("--stream", "--preload"):
        results = ["--results", str(tmp_path / "results"), "--name", how[2:]]
        got = CliRunner().invoke(probe_cli, [*linear, how, "--buffer-mb", "1", *results])
        assert got.exit_code == 0, got.output
    streamed, preloaded = (
        json.loads((tmp_path / "results" / f"{n}.json").read_text()) for n in ("stream", "preload")
    )
    assert streamed["test"] == preloaded["test"]
    got = CliRunner().invoke(
        analysis_cli, ["cka", "--no-progress", "--store", train, "--out", str(tmp_path / "cka.png")]
    )
    assert got.exit_code == 0, got.output
    cka = json.loads((tmp_path / "cka.json").read_text())
    assert train in json.dumps(cka)
    assert CliRunner().invoke(extract_cli, ["verify", train, test]).exit_code == 0
    assert objects(f"s3://{bucket}") == before  # readers wrote nothing at the store


@pytest.mark.slow
def test_bench_io_reads_a_store_at_a_url(tmp_path, fmnist_env, bucket):
    url = f"s3://{bucket}/bench.zarr"
    run_tiny(url, limit=40, ts=(10,), blocks=(3,), pools=(None,))
    got = CliRunner().invoke(
        extract_cli,
        ["bench-io", "--rows", "100", "--dim", "16", "--store", url, "--out", str(tmp_path / "io.json")],
    )
    assert got.exit_code == 0, got.output
    part = json.loads((tmp_path / "io.json").read_text())["parts"][-1]
    readers = {r["reader"]: r for r in part["results"]}
    assert part["store"] == url and part["rows"] == 40
    assert (
        readers["plain concurrent ranged GETs"]["of_plain"] == 1.0
        and readers["diffprobe, all rows"]["mb_per_s"] > 0
    )


@pytest.mark.slow
def test_a_missing_bucket_is_one_line(fmnist_env, bucket):
    args = ["pixels", "--data", "fashion-mnist", "--limit", "20", "--no-progress"]
    got = CliRunner().invoke(extract_cli, [*args, "--out", f"s3://{bucket}-none/x.zarr"])
    assert got.exit_code == 2 and "the bucket does not exist" in got.output
    assert len(got.output.strip().splitlines()) == 1
    got = CliRunner().invoke(extract_cli, ["verify", f"s3://{bucket}-none/x.zarr"])
    assert got.exit_code == 2 and "the bucket does not exist" in got.output


@pytest.mark.slow
def test_ranged_reads_of_partial_and_missing_shards_equal_zarr_and_a_local_store(tmp_path, bucket):
    """Several chunks per shard, a shard never written and a short last shard: the reader's guessed
    ranges, its index fetch and its fill values agree with zarr and with the same store on disk."""
    key = FeatureKey(10, 9, None)
    rng = np.random.default_rng(0)
    n, shard_rows = 150, 64  # shards of 64, 64 and 22 rows
    x = rng.standard_normal((n, 64, 32, 32)).astype(np.float16)  # 128 KiB rows: 32-row chunks
    x[:32] = np.nan  # a chunk of the fill value is not stored: shard 0's second chunk sits first
    stores = []
    for where in (f"s3://{bucket}/parts.zarr", tmp_path / "parts.zarr"):
        s = FeatureStore.create(
            where,
            row_shapes={key: x.shape[1:]},
            ids=[str(i) for i in range(n)],
            labels=np.zeros(n, np.int64),
            index=np.arange(n),
            shard_rows=shard_rows,
            views=1,
            dtype="float16",
            attrs={},
        )
        for shard in (0, 2):  # shard 1 is never written
            rows = s.shard_rows(shard)
            s.write_shard(shard, {key: x[rows.start : rows.stop]}, np.ones(len(rows), bool))
        stores.append(s.array(key))
    remote, local = stores
    assert remote.fast and remote.zarr.metadata.codecs[0].chunk_shape[0] == 32
    for lo, hi in ((0, 150), (0, 64), (10, 40), (40, 140), (128, 150), (70, 90), (149, 150)):
        got = remote[lo:hi]
        np.testing.assert_array_equal(got, np.asarray(remote.zarr[lo:hi]))
        np.testing.assert_array_equal(got, local[lo:hi])
    assert np.isnan(remote[64:128].astype(np.float32)).all()
    index = np.frombuffer(objects(f"s3://{bucket}/parts.zarr")[f"{key.path}/c/0/0/0/0"][-36:-4], "<u8")
    assert index[0] == index[1] == 2**64 - 1 and index[2] == 0  # chunk 0 absent, chunk 1 at offset 0
    np.testing.assert_array_equal(remote[128:150], x[128:150])


@pytest.mark.slow
def test_a_server_lost_mid_write_is_one_line(fmnist_env, monkeypatch):
    """The extraction's server goes away while it writes (a server of its own, killed once a
    shard is done): one error line naming the network, exit status 2."""
    exe = Path(sys.executable).parent / "moto_server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "moto_server did not start"
                time.sleep(0.2)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/lost", method="PUT"))
        for name, value in _credentials(endpoint).items():
            monkeypatch.setenv(name, value)
        env = {**os.environ, "FASHION_MNIST_DIR": str(fmnist_env), "OMP_NUM_THREADS": "1"}
        url = "s3://lost/cut.zarr"
        proc = subprocess.Popen(_cli(url), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                done = FeatureStore.open(url).done_shards()
            except Exception:  # noqa: BLE001 - not there yet
                done = np.zeros(1, bool)
            if 1 <= done.sum() < len(done):
                break
            time.sleep(0.01)
    finally:
        server.kill()
        server.wait()
    assert proc.poll() is None, "the run ended before its server went away"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot reach" in lines[0], err


@pytest.fixture(scope="module")
def iam_server():
    """A server that checks credentials and IAM policies: a writer may do anything in the bucket
    `auth`, a reader may only get and list. (moto lets the first requests through unchecked: the
    seven that set this up.)"""
    boto3 = pytest.importorskip("boto3")
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server is not installed (pip install -e '.[test]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"}
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:  # a bare connection: a request would count as one of the seven
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "moto_server did not start"
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        kw = dict(
            endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        boto3.client("s3", **kw).create_bucket(Bucket="auth")
        iam, keys = boto3.client("iam", **kw), {}
        for user, actions in (("writer", ["s3:*"]), ("reader", ["s3:Get*", "s3:List*"])):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint,
            }
            statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
            policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
            iam.put_user_policy(UserName=user, PolicyName="store", PolicyDocument=policy)
        yield keys
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_read_only_credentials_verify_probe_and_compare_and_cannot_write(
    tmp_path, fmnist_env, iam_server, monkeypatch
):
    from analysis.cli import cli as analysis_cli
    from probe.cli import cli as probe_cli

    def become(user: str) -> None:
        for name, value in iam_server[user].items():
            monkeypatch.setenv(name, value)

    url = "s3://auth/ro.zarr"
    become("writer")
    run_tiny(url, limit=40, ts=(10,), blocks=(3, 7), pools=(1,))
    before = objects("s3://auth")
    become("reader")
    assert verify_store(url) == []
    probe = ["train", "--train", url, "--head", "logreg", "--no-progress", "--results", str(tmp_path / "r")]
    got = CliRunner().invoke(probe_cli, probe)
    assert got.exit_code == 0, got.output
    got = CliRunner().invoke(
        analysis_cli, ["cka", "--no-progress", "--store", url, "--out", str(tmp_path / "c.png")]
    )
    assert got.exit_code == 0, got.output
    args = [
        "pixels",
        "--data",
        "fashion-mnist",
        "--limit",
        "20",
        "--no-progress",
        "--out",
        "s3://auth/px.zarr",
    ]
    got = CliRunner().invoke(extract_cli, args)
    assert got.exit_code == 2 and "access denied" in got.output and len(got.output.strip().splitlines()) == 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    got = CliRunner().invoke(extract_cli, ["verify", url])
    assert got.exit_code == 2 and "credentials were refused" in got.output
    become("writer")
    assert objects("s3://auth") == before  # the reader wrote nothing
