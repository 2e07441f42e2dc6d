"""The dataset registry on tiny trees in each official layout (see fake_datasets.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extract.cli import cli
from extract.data.registry import DATASETS, open_dataset
from extract.data.sources import DataError
from tests.extract import fake_datasets as fake
from tests.extract.fake_datasets import BUILDERS, colour


def red(img: Image.Image) -> float:
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    return arr[arr.shape[0] // 2, arr.shape[1] // 2, 0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_reader_finds_ids_labels_splits_and_classes(tmp_path, name):
    tree = BUILDERS[name](tmp_path)
    spec = DATASETS[name]
    assert set(tree["splits"]) == set(spec.splits)
    for split, expected in tree["splits"].items():
        src = open_dataset(name, tmp_path, split)
        assert src.ids == [i for i, _ in expected], split
        assert [
            src.classes[k] if name not in ("pets", "flowers") else src.names()[k] for k in src.labels
        ] == [c for _, c in expected]
        assert (
            len(src.classes) == len(tree["classes"])
            and src.classes[: len(tree["classes"])] == tree["classes"]
        )
        assert src.paths is not None and all(p.is_file() for p in src.paths)
        for i in range(len(src)):  # the file loaded is the one of that id: its colour encodes the label
            assert abs(red(src.load(i)) - colour(int(src.labels[i]))[0]) < 8, (split, src.ids[i])


@pytest.mark.parametrize("layout", ["csv", "devkit", "devkit-tar"])
def test_imagenet_flat_val_agrees_with_synset_folders(tmp_path, layout):
    fake.imagenet(tmp_path / "folders")
    fake.imagenet(tmp_path / layout, val=layout)
    a, b = (
        open_dataset("imagenet", tmp_path / "folders", "val"),
        open_dataset("imagenet", tmp_path / layout, "val"),
    )
    # synset folders list class by class, a flat val/ by file number: the same images and labels
    names = [i.split("/")[-1] for i in a.ids]
    assert dict(zip(names, a.labels.tolist())) == dict(zip(b.ids, b.labels.tolist()))
    assert b.ids == sorted(b.ids) and a.classes == b.classes == fake.WNIDS
    assert b.names() == fake.WORDS  # readable names from LOC_synset_mapping.txt or the devkit's meta.mat
    train = open_dataset("imagenet", tmp_path / layout, "train")
    assert train.classes == fake.WNIDS and np.array_equal(train.labels, np.repeat(np.arange(3), 3))


def test_imagenet_kaggle_layout(tmp_path):
    fake.imagenet(tmp_path / "k", val="csv")
    data = tmp_path / "k" / "ILSVRC" / "Data" / "CLS-LOC"
    data.mkdir(parents=True)
    for split in ("train", "val"):
        shutil.move(tmp_path / "k" / split, data / split)
    src = open_dataset("imagenet", tmp_path / "k", "val")
    assert len(src) == 5 and src.classes == fake.WNIDS and src.location == str(data / "val")


def test_imagenet_val_without_ground_truth_says_what_is_missing(tmp_path):
    fake.imagenet(tmp_path, val="csv")
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataError, match="neither LOC_val_solution.csv nor the devkit"):
        open_dataset("imagenet", tmp_path, "val")


def test_aircraft_levels_and_banner(tmp_path):
    tree = fake.aircraft(tmp_path)
    src = open_dataset("aircraft", tmp_path, "trainval", {"level": "family"})
    assert src.classes == ["A300", "A310", "Boeing 707"]
    assert [src.classes[k] for k in src.labels] == [c for _, c in tree["family"]["trainval"]]
    assert len(open_dataset("aircraft", tmp_path, "test", ("level=manufacturer",)).classes) == 2
    img = src.load(0)
    assert img.size == (64, 40)  # the 20-pixel banner is gone
    assert np.asarray(img)[-1].max() < 200  # and with it the white rows


def test_cub_bounding_box_crop(tmp_path):
    fake.cub(tmp_path)
    plain, boxed = (
        open_dataset("cub", tmp_path, "train"),
        open_dataset("cub", tmp_path, "train", ("crop=bbox",)),
    )
    assert plain.load(0).size == (60, 50) and boxed.load(0).size == (30, 20)
    assert boxed.name != plain.name and boxed.fingerprint() != plain.fingerprint()  # a different store key


def test_dtd_partitions_differ(tmp_path):
    fake.dtd(tmp_path)
    one, two = (
        open_dataset("dtd", tmp_path, "train"),
        open_dataset("dtd", tmp_path, "train", ("partition=2",)),
    )
    assert len(one) == len(two) == 6 and one.ids != two.ids and one.classes == two.classes


def test_root_may_be_the_dataset_folder_itself(tmp_path):
    fake.cub(tmp_path)
    fake.aircraft(tmp_path)
    assert len(open_dataset("cub", tmp_path / "CUB_200_2011", "train")) == 4
    assert len(open_dataset("aircraft", tmp_path / "fgvc-aircraft-2013b", "train")) == 3


@pytest.mark.parametrize(
    "name", ["imagenet", "aircraft", "cars", "cub", "dogs", "flowers", "nabirds", "pets", "dtd"]
)
def test_missing_root_names_the_layout(tmp_path, name):
    with pytest.raises(DataError, match="needs --data-root; expected layout"):
        open_dataset(name, None, DATASETS[name].splits[0])
    with pytest.raises(DataError, match="expected layout"):
        open_dataset(name, tmp_path / "nowhere", DATASETS[name].splits[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected layout"):
        open_dataset(name, tmp_path / "empty", DATASETS[name].splits[0])


@pytest.mark.parametrize(
    "name,remove",
    [
        ("cub", "CUB_200_2011/train_test_split.txt"),
        ("aircraft", "fgvc-aircraft-2013b/data/images_variant_test.txt"),
        ("cars", "stanford_cars/devkit/cars_meta.mat"),
        ("flowers", "flowers-102/imagelabels.mat"),
        ("dogs", "test_list.mat"),
        ("pets", "oxford-iiit-pet/annotations/test.txt"),
        ("dtd", "dtd/labels/test1.txt"),
        ("nabirds", "nabirds/classes.txt"),
    ],
)
def test_missing_annotation_file_is_named(tmp_path, name, remove):
    BUILDERS[name](tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(DataError, match=f"missing .*{remove.split('/')[-1]}.*expected layout"):
        open_dataset(name, tmp_path, "test")


def test_bad_split_and_option_are_one_line(tmp_path):
    fake.pets(tmp_path)
    with pytest.raises(DataError, match="pets has splits trainval, test, not 'train'"):
        open_dataset("pets", tmp_path, "train")
    with pytest.raises(DataError, match="has no option 'level'"):
        open_dataset("pets", tmp_path, "test", ("level=family",))
    with pytest.raises(DataError, match="takes level in variant, family, manufacturer"):
        open_dataset("aircraft", tmp_path, "test", ("level=model",))


# ---------------------------------------------------------------- commands
def test_datasets_command_lists_each_layout():
    result = CliRunner().invoke(cli, ["datasets"])
    assert result.exit_code == 0
    for name, spec in DATASETS.items():
        assert f"{name}: " in result.output and spec.layout in result.output


def test_check_data_reports_counts_missing_and_unreadable(tmp_path):
    fake.cub(tmp_path)
    result = CliRunner().invoke(
        cli, ["check-data", "--data", "cub", "--data-root", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 1
    assert (
        "train: 4 images (official 5,994), 3 classes (official 200), 0 missing, 0 unreadable" in result.output
    )
    assert (
        "4 images, the official split has 5,994" in result.output
        and "3 classes, the official dataset has 200" in result.output
    )
    src = open_dataset("cub", tmp_path, "test")
    src.paths[0].unlink()
    src.paths[1].write_bytes(b"not a jpeg")
    result = CliRunner().invoke(
        cli, ["check-data", "--data", "cub", "--data-root", str(tmp_path), "--split", "test", "--no-progress"]
    )
    assert result.exit_code == 1
    assert f"1 image files missing under {src.location}: {src.ids[0]}" in result.output
    assert f"1 unreadable images: {src.ids[1]}" in result.output


def test_check_data_names_a_missing_annotation_file(tmp_path):
    fake.dogs(tmp_path)
    (tmp_path / "train_list.mat").unlink()
    result = CliRunner().invoke(
        cli, ["check-data", "--data", "dogs", "--data-root", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 1 and "no stanford_dogs/train_list.mat under" in result.output


def test_check_data_flags_flowers_files_that_are_not_the_release(tmp_path):
    fake.flowers(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["check-data", "--data", "flowers", "--data-root", str(tmp_path), "--split", "val", "--no-progress"],
    )
    assert result.exit_code == 1 and "imagelabels.mat differs from the official file" in result.output


def test_check_data_passes_a_whole_tree(tmp_path, monkeypatch):
    """With the official counts set to the fake tree's, nothing is reported and the exit is 0."""
    import dataclasses

    from extract.data import registry as datasets

    fake.dtd(tmp_path)
    spec = dataclasses.replace(DATASETS["dtd"], official={"train": 6, "val": 3, "test": 3}, classes=3)
    monkeypatch.setitem(datasets.DATASETS, "dtd", spec)
    result = CliRunner().invoke(
        cli, ["check-data", "--data", "dtd", "--data-root", str(tmp_path), "--decode", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("ok")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "imagenet"], "error: --data imagenet needs --data-root; expected layout"),
        (
            ["--data", "aircraft", "--data-root", "{root}", "--data-opt", "level=model"],
            "error: --data-opt level=model: aircraft takes level in",
        ),
        (
            ["--data", "pets", "--data-root", "{root}", "--split", "train"],
            "error: pets has splits trainval, test, not 'train'",
        ),
        (
            ["--data", "cub", "--data-root", "{root}", "--subset", "{root}/absent.txt"],
            "error: image list file not found",
        ),
        (
            ["--data", "cub", "--data-root", "{root}", "--split", "test", "--aug", "crop-flip"],
            "error: --aug crop-flip is for training splits",
        ),
    ],
)
def test_run_refuses_bad_data_arguments_in_one_line(tmp_path, args, message):
    fake.cub(tmp_path)
    args = [a.replace("{root}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(
        cli, ["run", "--model", "tiny", "--random-init", "--out", str(tmp_path / "s.zarr"), *args]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s.zarr").exists()


def test_imagenet_quirks_load_as_rgb(tmp_path):
    """ImageNet holds CMYK and grayscale JPEGs and a PNG named .JPEG; each becomes RGB in [-1, 1]."""
    import torch

    from extract.data.sources import FeatureInput

    fake.imagenet(tmp_path)
    folder = tmp_path / "train" / fake.WNIDS[0]
    Image.new("CMYK", (40, 40), (0, 0, 0, 0)).save(folder / f"{fake.WNIDS[0]}_0.JPEG")  # white in CMYK
    Image.new("L", (40, 40), 0).save(folder / f"{fake.WNIDS[0]}_1.JPEG", format="JPEG")
    Image.new("RGB", (40, 40), (255, 0, 0)).save(folder / f"{fake.WNIDS[0]}_2.JPEG", format="PNG")
    src = open_dataset("imagenet", tmp_path, "train")
    images = FeatureInput(src, 16, 3)
    (_, white, e0, _), (_, black, e1, _), (_, red_png, e2, _) = images[0], images[1], images[2]
    assert e0 == e1 == e2 == "" and white.shape == black.shape == red_png.shape == (3, 16, 16)
    assert torch.allclose(white, torch.ones_like(white), atol=0.02) and torch.allclose(
        black, -torch.ones_like(black), atol=0.02
    )
    assert red_png[0].min() > 0.98 and red_png[1:].max() < -0.98


def test_malformed_annotation_files_are_one_line(tmp_path):
    fake.imagenet(tmp_path / "a", val="csv")
    (tmp_path / "a" / "LOC_val_solution.csv").write_text("id,label\nILSVRC2012_val_00000001,n01440764\n")
    with pytest.raises(DataError, match="needs the columns ImageId,PredictionString"):
        open_dataset("imagenet", tmp_path / "a", "val")
    fake.imagenet(tmp_path / "b", val="devkit")
    devkit = tmp_path / "b" / "ILSVRC2012_devkit_t12" / "data"
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("3\nthree\n")
    with pytest.raises(DataError, match="not an ILSVRC2012_ID"):
        open_dataset("imagenet", tmp_path / "b", "val")
    fake.aircraft(tmp_path / "c")
    (tmp_path / "c" / "fgvc-aircraft-2013b" / "data" / "images_variant_test.txt").write_text("1000007\n")
    with pytest.raises(DataError, match="has a line without '<id> <class>'"):
        open_dataset("aircraft", tmp_path / "c", "test")
    fake.cub(tmp_path / "d")
    (tmp_path / "d" / "CUB_200_2011" / "images.txt").write_text("1\n")
    with pytest.raises(DataError, match="images.txt line 1: expected 2 fields"):
        open_dataset("cub", tmp_path / "d", "train")


def test_malformed_cub_boxes_and_class_ids_are_one_line(tmp_path):
    fake.cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "bounding_boxes.txt").write_text("1 10.0 5.0 thirty 20.0\n")
    with pytest.raises(DataError, match="image 1 needs 'x y width height'"):
        open_dataset("cub", tmp_path, "train", ("crop=bbox",))
    (tmp_path / "CUB_200_2011" / "bounding_boxes.txt").write_text("1 10.0 5.0 30.0 20.0\n")
    with pytest.raises(DataError, match="image 2 has no line in .*bounding_boxes.txt"):
        open_dataset("cub", tmp_path, "train", ("crop=bbox",))
    (tmp_path / "CUB_200_2011" / "classes.txt").write_text("1 a\nx b\n3 c\n")
    with pytest.raises(DataError, match="class id 'x' .* is not a number"):
        open_dataset("cub", tmp_path, "train")
