"""CIFAR-10/100 (python pickles), WebDataset tar shards and Hugging Face datasets, on tiny files
each test writes in tmp_path: what is read back equals what was written, and a wrong layout is
one DataError saying what is wrong."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extract.cli import cli
from extract.data.registry import DATASETS, open_dataset, parse_options
from extract.data.sources import DataError
from extract.store.schema import FeatureStore

CIFAR10_NAMES = [f"class{k}" for k in range(10)]


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def png(colour, size=(20, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def colour(label: int, k: int) -> tuple[int, int, int]:
    return (20 + 30 * label, 10 + 7 * k, 90)


def dump(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


# ---------------------------------------------------------------- CIFAR
def cifar_batch(rng, n: int, labels: dict) -> dict:
    """A batch as the release holds it: rows of 1024 R, 1024 G, 1024 B values."""
    batch = {
        b"batch_label": b"a test batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{k}.png".encode() for k in range(n)],
    }
    batch.update({k: list(map(int, v)) for k, v in labels.items()})
    return batch


def write_cifar10(root, per_batch: int = 2, test: int = 3) -> dict:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    written = {"train": [], "test": []}
    for name, split, n in [
        *[(f"data_batch_{k}", "train", per_batch) for k in range(1, 6)],
        ("test_batch", "test", test),
    ]:
        batch = cifar_batch(rng, n, {b"labels": rng.integers(0, 10, n)})
        dump(folder / name, batch)
        written[split].append(batch)
    dump(
        folder / "batches.meta",
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch},
    )
    return {
        s: (np.concatenate([b[b"data"] for b in bs]), np.concatenate([b[b"labels"] for b in bs]))
        for s, bs in written.items()
    }


def write_cifar100(root) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    written = {}
    for split, n in (("train", 5), ("test", 3)):
        fine = rng.integers(0, 100, n)
        written[split] = cifar_batch(rng, n, {b"fine_labels": fine, b"coarse_labels": fine // 5})
        dump(folder / split, written[split])
    dump(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
            b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
        },
    )
    return written


def test_cifar10_reads_back_every_image_and_label(tmp_path):
    written = write_cifar10(tmp_path)
    for split, (data, labels) in written.items():
        for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent, or the folder itself
            src = open_dataset("cifar10", root, split)
            assert src.ids == [f"{split}/{i}" for i in range(len(data))] and src.classes == CIFAR10_NAMES
            assert src.labels.tolist() == labels.tolist()
            assert src.location == str(tmp_path / "cifar-10-batches-py")
            for i in range(len(src)):
                img = src.load(i)
                assert img.mode == "RGB" and img.size == (32, 32)
                assert np.array_equal(np.asarray(img), data[i].reshape(3, 32, 32).transpose(1, 2, 0))
    assert len(open_dataset("cifar10", tmp_path, "train")) == 10  # data_batch_1..5 in turn


def test_cifar100_fine_and_coarse_labels(tmp_path):
    written = write_cifar100(tmp_path)
    fine, coarse = (
        open_dataset("cifar100", tmp_path, "test"),
        open_dataset("cifar100", tmp_path, "test", ("labels=coarse",)),
    )
    batch = written["test"]
    assert fine.labels.tolist() == batch[b"fine_labels"] and coarse.labels.tolist() == batch[b"coarse_labels"]
    assert (
        len(fine.classes) == 100
        and fine.classes[7] == "fine7"
        and coarse.classes == [f"coarse{k}" for k in range(20)]
    )
    assert (
        fine.name == "cifar100"
        and coarse.name == "cifar100[labels=coarse]"
        and fine.fingerprint() != coarse.fingerprint()
    )
    assert np.array_equal(rgb(fine.load(2)), batch[b"data"][2].reshape(3, 32, 32).transpose(1, 2, 0))
    assert (
        DATASETS["cifar100"].official_classes(parse_options(DATASETS["cifar100"], ("labels=coarse",))) == 20
    )


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str opcodes (SHORT_BINSTRING, BINSTRING), as the release's files
    hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write((b"U" + bytes([n]) if n < 256 else b"T" + n.to_bytes(4, "little")) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def test_cifar_reads_python2_pickles_as_the_release_holds_them(tmp_path):
    """The official batches come from Python 2 and numpy 1: str opcodes, numpy.core.multiarray."""
    written = write_cifar10(tmp_path)
    batch = {
        b"data": written["test"][0],
        b"labels": written["test"][1].tolist(),
        b"filenames": [b"a.png", b"b.png", b"c.png"],
    }
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(batch)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"_codecs" not in raw and b"cnumpy.core.multiarray\n_reconstruct" in raw
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(raw)
    src = open_dataset("cifar10", tmp_path, "test")
    assert src.labels.tolist() == written["test"][1].tolist()
    assert np.array_equal(rgb(src.load(1)), written["test"][0][1].reshape(3, 32, 32).transpose(1, 2, 0))


class Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    target = tmp_path / "pwned"
    dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Exploit(target)})
    with pytest.raises(
        DataError, match=r"test_batch: not a CIFAR python batch \(global posix.mkdir is not allowed"
    ):
        open_dataset("cifar10", tmp_path, "test")
    assert not target.exists()
    dump(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
    )
    with pytest.raises(DataError, match=r"'data' must be a uint8 array \(N, 3072\), got float32 \(2, 3072\)"):
        open_dataset("cifar10", tmp_path, "test")
    dump(tmp_path / "cifar-10-batches-py" / "test_batch", [1, 2])
    with pytest.raises(DataError, match="holds a list, not a dict"):
        open_dataset("cifar10", tmp_path, "test")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch: not a CIFAR python batch"):
        open_dataset("cifar10", tmp_path, "test")


def test_cifar_wrong_layouts_are_one_line(tmp_path):
    with pytest.raises(DataError, match="needs --data-root; expected layout: ROOT/cifar-10-batches-py"):
        open_dataset("cifar10", None, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cifar-100-python/meta under .*; expected layout"):
        open_dataset("cifar100", tmp_path / "empty", "train")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing .*data_batch_3; expected layout"):
        open_dataset("cifar10", tmp_path, "train")
    dump(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
    )
    with pytest.raises(DataError, match="labels in .* run outside the 10 classes"):
        open_dataset("cifar10", tmp_path, "test")
    dump(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]},
    )
    with pytest.raises(DataError, match="no 'labels' entry \\(it holds: data, fine_labels\\)"):
        open_dataset("cifar10", tmp_path, "test")
    with pytest.raises(DataError, match="cifar100 takes labels in fine, coarse"):
        open_dataset("cifar100", tmp_path, "test", ("labels=medium",))


# ---------------------------------------------------------------- WebDataset shards
def write_shard(path, samples, label: str = "cls", gz: bool = False) -> None:
    """img2dataset's order: KEY.jpg/png then KEY.json/KEY.cls (and a .txt caption)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for key, image, value in samples:
            files = {f"{key}.png": image, f"{key}.txt": b"a caption"}
            if label == "cls" and value is not None:
                files[f"{key}.cls"] = str(value).encode()
            if label == "json":
                files[f"{key}.json"] = json.dumps(
                    {"key": key, "status": "success", **({"class": value} if value is not None else {})}
                ).encode()
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def shards(
    root, split="train", labels=((0, 2, 1), (1, 1)), label="cls", folder=False
) -> list[tuple[str, int, tuple]]:
    """Shards <split>-00000N.tar (or <split>/00000N.tar); returns (id, label, colour) in order."""
    expect = []
    for s, shard_labels in enumerate(labels):
        stem = f"{s:06d}" if folder else f"{split}-{s:06d}"
        samples = []
        for k, value in enumerate(shard_labels):
            key = f"{s:04d}{k:05d}"
            samples.append((key, png(colour(k, s)), value))
            expect.append((f"{stem}/{key}", value, colour(k, s)))
        write_shard(root / split / f"{stem}.tar" if folder else root / f"{stem}.tar", samples, label)
    return expect


def test_webdataset_shards_read_back_by_position(tmp_path):
    expect = shards(tmp_path)
    src = open_dataset("webdataset", tmp_path, "train")
    assert src.ids == [i for i, _, _ in expect] and src.labels.tolist() == [v for _, v, _ in expect]
    assert src.classes == ["0", "1", "2"] and src.paths is None
    for i in reversed(range(len(src))):  # any image on its own, in any order
        assert rgb(src.load(i))[0, 0].tolist() == list(expect[i][2])
    pattern = open_dataset("webdataset", str(tmp_path / "train-{000000..000001}.tar"), "train")
    assert pattern.ids == src.ids and pattern.fingerprint() == src.fingerprint()
    assert open_dataset("webdataset", tmp_path / "train-000001.tar", "train").ids == src.ids[3:]
    assert [
        i.split("/")[0] for i in open_dataset("webdataset", str(tmp_path / "train-*.tar"), "train").ids
    ] == [i.split("/")[0] for i in src.ids]


def test_webdataset_json_labels_and_split_folders(tmp_path):
    expect = shards(tmp_path, "val", labels=(("dog", "cat"), ("emu",)), label="json", folder=True)
    src = open_dataset("webdataset", tmp_path, "val", ("label=json:class",))
    assert src.ids == ["000000/000000000", "000000/000000001", "000001/000100000"]
    assert src.classes == ["cat", "dog", "emu"] and [src.classes[k] for k in src.labels] == [
        v for _, v, _ in expect
    ]
    assert rgb(src.load(2))[0, 0].tolist() == list(expect[2][2])
    with pytest.raises(
        DataError,
        match=r"sample 000000/000000000: its .json has no label field 'label' \(it has: class, key, status\)",
    ):
        open_dataset("webdataset", tmp_path, "val", ("label=json:label",))
    with pytest.raises(
        DataError, match=r"sample 000000/000000000 has no .cls file for its label \(it has: json, png, txt\)"
    ):
        open_dataset("webdataset", tmp_path, "val")


def test_webdataset_wrong_layouts_are_one_line(tmp_path):
    with pytest.raises(DataError, match="webdataset needs --data-root; expected layout"):
        open_dataset("webdataset", None, "train")
    shards(tmp_path, labels=((0, None),))
    with pytest.raises(DataError, match="sample train-000000/000000001 has no .cls file for its label"):
        open_dataset("webdataset", tmp_path, "train")
    with pytest.raises(
        DataError, match=r"no test/\*.tar or test-\*.tar shards in .* \(it holds: train-000000.tar\)"
    ):
        open_dataset("webdataset", tmp_path, "test")
    with pytest.raises(DataError, match="webdataset takes label=cls .* or label=json:<field>"):
        open_dataset("webdataset", tmp_path, "train", ("label=jsn:x",))
    with pytest.raises(DataError, match="webdataset has no option 'labels' \\(its options: label\\)"):
        open_dataset("webdataset", tmp_path, "train", ("labels=cls",))
    with pytest.raises(DataError, match="1 of the 2 shards .* do not exist"):
        open_dataset("webdataset", str(tmp_path / "train-{000000..000001}.tar"), "train")
    write_shard(tmp_path / "gz" / "train-000000.tar", [("a", png((1, 2, 3)), 0)], gz=True)
    with pytest.raises(DataError, match="is not an uncompressed tar file"):
        open_dataset("webdataset", tmp_path / "gz", "train")
    write_shard(tmp_path / "bad" / "train-000000.tar", [("a", png((1, 2, 3)), "x")])
    with pytest.raises(DataError, match=r"sample train-000000/a: .cls holds b'x', not an integer"):
        open_dataset("webdataset", tmp_path / "bad", "train")


# ---------------------------------------------------------------- Hugging Face datasets
def hf_dataset(labels, names=("ant", "bee", "cow"), offset: int = 0):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    images = [{"bytes": png(colour(v, k + offset)), "path": None} for k, v in enumerate(labels)]
    return datasets.Dataset.from_dict({"image": images, "label": list(labels)}, features=features)


def test_hf_save_to_disk_dataset_dict_and_single_dataset(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    dd = datasets.DatasetDict({"train": hf_dataset([2, 0, 1, 0]), "test": hf_dataset([1, 2], offset=5)})
    dd.save_to_disk(str(tmp_path / "dd"))
    for split, want in (("train", [2, 0, 1, 0]), ("test", [1, 2])):
        src = open_dataset("hf", tmp_path / "dd", split)
        assert (
            src.classes == ["ant", "bee", "cow"]
            and src.labels.tolist() == want
            and src.ids == [f"{split}/{i}" for i in range(len(want))]
        )
        for i in range(len(src)):
            assert rgb(src.load(i))[0, 0].tolist() == list(colour(want[i], i + (5 if split == "test" else 0)))
    with pytest.raises(DataError, match="the DatasetDict in .* has splits train, test, not 'val'"):
        open_dataset("hf", tmp_path / "dd", "val")
    hf_dataset([1, 1]).save_to_disk(str(tmp_path / "one"))
    assert open_dataset("hf", tmp_path / "one", "all").labels.tolist() == [1, 1]
    with pytest.raises(
        DataError, match=r"is one saved Dataset \(split None\), read as --split all, not 'train'"
    ):
        open_dataset("hf", tmp_path / "one", "train")
    with pytest.raises(
        DataError,
        match=r"has no image column 'img' \(its columns: image, label\); "
        r"choose one with --data-opt image=<column>",
    ):
        open_dataset("hf", tmp_path / "dd", "train", ("image=img",))


def test_hf_parquet_files_with_and_without_features(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    hf_dataset([0, 2, 1]).to_parquet(str(tmp_path / "a" / "data" / "train-00000-of-00001.parquet"))
    src = open_dataset("hf", tmp_path / "a", "train")
    # ClassLabel from the schema
    assert src.classes == ["ant", "bee", "cow"] and src.labels.tolist() == [0, 2, 1]
    assert rgb(src.load(1))[0, 0].tolist() == list(colour(2, 1))
    # plain columns, other names, several files and row groups: {"bytes", "path"} structs and raw bytes
    rows = [("zebra", 0), ("yak", 1), ("zebra", 2), ("ox", 3), ("yak", 4)]
    for f, part in enumerate((rows[:3], rows[3:])):
        pics = [{"bytes": png(colour(len(name), k)), "path": None} for name, k in part]
        column = pa.array(pics) if f == 0 else pa.array([p["bytes"] for p in pics], pa.binary())
        table = pa.table({"pic": column, "kind": [name for name, _ in part]})
        (tmp_path / "b" / "test").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / "b" / "test" / f"part-{f}.parquet", row_group_size=2)
    src = open_dataset("hf", tmp_path / "b", "test", ("image=pic", "label=kind"))
    assert src.classes == ["ox", "yak", "zebra"] and [src.classes[k] for k in src.labels] == [
        n for n, _ in rows
    ]
    for i in (4, 0, 3, 1, 2):  # across row groups and files, out of order
        assert rgb(src.load(i))[0, 0].tolist() == list(colour(len(rows[i][0]), rows[i][1]))
    # a worker's copy reads alike
    assert rgb(pickle.loads(pickle.dumps(src.loader))(3))[0, 0].tolist() == list(colour(2, 3))
    result = check(
        "--data",
        "hf",
        "--data-root",
        tmp_path / "b",
        "--split",
        "test",
        "--data-opt",
        "image=pic",
        "--data-opt",
        "label=kind",
        "--decode",
    )
    # 4 threads, shared row groups
    assert result.exit_code == 0, result.output
    assert "test: 5 images, 3 classes, 0 missing, 0 unreadable" in result.output, result.output
    with pytest.raises(DataError, match=r"has no label column 'label' \(its columns: pic, kind\)"):
        open_dataset("hf", tmp_path / "b", "test", ("image=pic",))
    with pytest.raises(
        DataError,
        match=r"no save_to_disk folder and no train parquet files in .* \(it holds: test\); expected layout",
    ):
        open_dataset("hf", tmp_path / "b", "train")
    with pytest.raises(DataError, match="hf needs --data-root"):
        open_dataset("hf", None, "train")


def test_a_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    shards(tmp_path)
    for module in ("webdataset", "webdataset.tariterators", "webdataset.shardlists", "datasets"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        DataError,
        match=r"--data webdataset needs the webdataset package: pip install 'diffprobe\[webdataset\]'",
    ):
        open_dataset("webdataset", tmp_path, "train")
    (tmp_path / "train").mkdir()
    pq_path = tmp_path / "train" / "x.parquet"
    pq_path.write_bytes(b"")
    with pytest.raises(
        DataError, match=r"--data hf needs the datasets package: pip install 'diffprobe\[hf\]'"
    ):
        open_dataset("hf", tmp_path, "train")


# ---------------------------------------------------------------- commands
def check(*args):
    return CliRunner().invoke(cli, ["check-data", *map(str, args), "--no-progress"])


def test_check_data_on_each_new_source(tmp_path):
    write_cifar10(tmp_path / "c")
    result = check("--data", "cifar10", "--data-root", tmp_path / "c")
    assert result.exit_code == 1  # a tiny tree is not the release
    assert (
        "train: 10 images (official 50,000), 10 classes (official 10), 0 missing, 0 unreadable"
        in result.output
    )
    assert (
        "test: 3 images (official 10,000)" in result.output
        and "10 images, the official split has 50,000" in result.output
    )
    shards(tmp_path / "w")
    result = check("--data", "webdataset", "--data-root", tmp_path / "w", "--decode")
    assert result.exit_code == 0, result.output
    assert "train: 5 images, 3 classes, 0 missing, 0 unreadable" in result.output, result.output
    write_shard(tmp_path / "w" / "train-000002.tar", [("broken", b"not an image", 0)])
    result = check("--data", "webdataset", "--data-root", tmp_path / "w")
    assert result.exit_code == 1 and "1 unreadable images: train-000002/broken" in result.output
    result = check("--data", "webdataset", "--data-root", tmp_path / "w", "--data-opt", "label=json:class")
    assert (
        result.exit_code == 1
        and "train: cannot be listed" in result.output
        and "has no .json file for its label" in result.output
    )
    import datasets

    datasets.disable_progress_bars()
    splits = {"train": hf_dataset([0, 1, 2]), "test": hf_dataset([2, 1, 0])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "h"))
    result = check("--data", "hf", "--data-root", tmp_path / "h", "--split", "train", "--split", "test")
    assert result.exit_code == 0 and result.output.strip().endswith("ok"), result.output
    result = check("--data", "hf", "--data-root", tmp_path / "h", "--data-opt", "label=y")
    assert result.exit_code == 1 and "has no label column 'y' (its columns: image, label)" in result.output


def test_datasets_command_lists_the_free_options():
    result = CliRunner().invoke(cli, ["datasets"])
    assert result.exit_code == 0
    assert (
        "--data-opt label=<any> (default cls)" in result.output
        and "--data-opt image=<any> (default image)" in result.output
    )
    assert "cifar100: " in result.output and "--data-opt labels=fine|coarse (default fine)" in result.output


def test_run_extracts_a_tiny_cifar_tree(tmp_path):
    write_cifar10(tmp_path)
    args = [
        "run",
        "--model",
        "tiny",
        "--random-init",
        "--data",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "--split",
        "train",
        "--limit",
        "8",
        "-t",
        "10",
        "-b",
        "1",
        "--pool",
        "1",
        "--micro-batch",
        "4",
        "--out",
        str(tmp_path / "s.zarr"),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "s.zarr")
    src = open_dataset("cifar10", tmp_path, "train")
    assert store.complete and store.n_rows == 8
    assert set(store.ids()) <= set(src.ids) and all(
        src.labels[src.ids.index(i)] == y for i, y in zip(store.ids(), store.labels())
    )
    assert store.attrs["key"]["dataset"]["name"] == "cifar10"
