"""Subsets (class files, image lists, per-class sampling) and seeded augmented views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from extract.data.augment import crop_flip, crop_flip_box, view_rng
from extract.data.registry import open_dataset
from extract.data.sources import DataError, FeatureInput
from extract.data.subsets import Subset, apply_subset, per_class_rows
from extract.store.schema import FeatureStore
from tests.conftest import run_tiny
from tests.extract import fake_datasets as fake
from tests.extract.test_run import store_bytes


@pytest.fixture
def imagenet_root(tmp_path):
    fake.imagenet(tmp_path / "in", val="csv")
    return tmp_path / "in"


def test_class_subset_renumbers_labels_in_standard_order(imagenet_root, tmp_path):
    classes = tmp_path / "in50.txt"
    # a synset and a readable name
    classes.write_text("# a class subset\nn01484850\n\ngoldfish, Carassius auratus\n")
    src, rows = apply_subset(open_dataset("imagenet", imagenet_root, "train"), Subset(classes_file=classes))
    assert src.classes == ["n01443537", "n01484850"] and src.names()[0].startswith("goldfish")
    # rows keep their dataset index: the same noise as without the subset
    assert list(rows) == list(range(3, 9))
    assert list(src.labels[rows]) == [0, 0, 0, 1, 1, 1] and src.class_counts(rows) == [3, 3]
    assert all(src.ids[i].startswith(("n01443537/", "n01484850/")) for i in rows)
    assert abs(np.asarray(src.load(int(rows[3])))[20, 20, 0] - fake.colour(2)[0]) < 8


def test_class_subset_store_rows_equal_the_full_store(tmp_path, textured_folder):
    """A class subset changes labels, never features: its rows equal the full run's rows."""
    classes = tmp_path / "b.txt"
    classes.write_text("b\n")
    cfg = dict(data="imagefolder", data_root=textured_folder, shard_rows=4, ts=(10,), blocks=(7,), pools=(1,))
    run_tiny(tmp_path / "full.zarr", **cfg)
    run_tiny(tmp_path / "sub.zarr", classes_file=classes, **cfg)
    full, sub = FeatureStore.open(tmp_path / "full.zarr"), FeatureStore.open(tmp_path / "sub.zarr")
    key = full.keys()[0]
    assert list(sub.index()) == [3, 4, 5] and list(sub.labels()) == [0, 0, 0] and sub.classes() == ["b"]
    assert np.array_equal(sub.array(key)[:], full.array(key)[3:6])


def test_class_subset_naming_an_unknown_class_fails(imagenet_root, tmp_path):
    classes = tmp_path / "c.txt"
    classes.write_text("n01440764\nn99999999\n")
    with pytest.raises(DataError, match="1 of 2 entries are not classes of imagenet, e.g. 'n99999999'"):
        apply_subset(open_dataset("imagenet", imagenet_root, "train"), Subset(classes_file=classes))


def test_image_list_by_file_name_as_the_label_fraction_lists(imagenet_root, tmp_path):
    listing = tmp_path / "1percent.txt"
    listing.write_text("n01484850_2.JPEG\nn01440764_0.JPEG\nn01443537/n01443537_1.JPEG\n")
    src, rows = apply_subset(open_dataset("imagenet", imagenet_root, "train"), Subset(list_file=listing))
    assert [src.ids[i] for i in rows] == [
        "n01440764/n01440764_0.JPEG",
        "n01443537/n01443537_1.JPEG",
        "n01484850/n01484850_2.JPEG",
    ]


def test_image_list_naming_files_that_do_not_exist_fails(imagenet_root, tmp_path):
    listing = tmp_path / "10percent.txt"
    listing.write_text("n01440764_0.JPEG\nn01440764_77.JPEG\nn02000000_1.JPEG\n")
    with pytest.raises(
        DataError, match=r"2 of 3 entries name no image of imagenet train .*e\.g\. 'n01440764_77\.JPEG'"
    ):
        apply_subset(open_dataset("imagenet", imagenet_root, "train"), Subset(list_file=listing))
    with pytest.raises(DataError, match="image list file not found"):
        apply_subset(
            open_dataset("imagenet", imagenet_root, "train"), Subset(list_file=tmp_path / "absent.txt")
        )


def test_per_class_sampler_is_seeded_balanced_and_nested():
    labels = np.repeat(np.arange(4), 25)
    rows = np.arange(100)
    two = per_class_rows(labels, rows, 2, seed=7)
    assert np.array_equal(two, per_class_rows(labels, rows, 2, seed=7))
    assert not np.array_equal(two, per_class_rows(labels, rows, 2, seed=8))
    assert np.bincount(labels[two]).tolist() == [2, 2, 2, 2] and np.all(np.diff(two) > 0)
    assert set(two) <= set(per_class_rows(labels, rows, 5, seed=7))  # a larger N keeps the smaller N's rows
    short = per_class_rows(np.array([0, 0, 0, 1]), np.arange(4), 2, seed=0)
    # a class with fewer keeps all it has
    assert np.bincount(np.array([0, 0, 0, 1])[short]).tolist() == [2, 1]


def test_limit_alone_takes_the_rows_it_always_took(fmnist_env):
    from extract.data.sources import subset_indices

    src = open_dataset("fashion-mnist", None, "train")
    _, rows = apply_subset(src, Subset(limit=20, seed=3))
    assert np.array_equal(rows, subset_indices(len(src), 20, 3))


# ---------------------------------------------------------------- augmentation
def test_crop_flip_boxes_cover_0_8_to_1_of_the_short_side():
    flips = 0
    for view in range(300):
        (left, top, right, bottom), flip = crop_flip_box(120, 80, view_rng(0, 5, view))
        side = right - left
        assert (
            bottom - top == side
            and 64 <= side <= 80
            and left >= 0
            and top >= 0
            and right <= 120
            and bottom <= 80
        )
        flips += flip
    assert 100 < flips < 200


def test_views_depend_on_seed_index_and_view_only(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    a = np.asarray(crop_flip(img, 0, 3, 1))
    assert np.array_equal(a, np.asarray(crop_flip(img, 0, 3, 1)))
    assert not np.array_equal(a, np.asarray(crop_flip(img, 0, 3, 2)))
    assert not np.array_equal(a, np.asarray(crop_flip(img, 1, 3, 1)))


def test_feature_input_gives_one_tensor_per_view(tmp_path):
    fake.dtd(tmp_path)
    src = open_dataset("dtd", tmp_path, "train")
    i, x, err, _ = FeatureInput(src, 16, 3, crop_flip, views=3, seed=0)[2]
    assert err == "" and x.shape == (3, 3, 16, 16)
    _, again, _, _ = FeatureInput(src, 16, 3, crop_flip, views=3, seed=0)[2]
    assert torch.equal(x, again)


@pytest.fixture
def textured_folder(tmp_path):
    """root/train/<class>/<i>.png of random texture (a crop of a flat colour would equal the image)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "tex" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
                tmp_path / "tex" / "train" / c / f"{i}.png"
            )
    return tmp_path / "tex"


def test_extract_with_augmented_views_is_batch_independent(tmp_path, textured_folder):
    cfg = dict(
        data="imagefolder",
        data_root=textured_folder,
        shard_rows=4,
        ts=(10,),
        blocks=(7,),
        pools=(1,),
        views=2,
        aug="crop-flip",
    )
    run_tiny(tmp_path / "a.zarr", batch_size=4, **cfg)
    run_tiny(tmp_path / "b.zarr", batch_size=1, micro_batch=4, **cfg)
    assert store_bytes(tmp_path / "a.zarr") == store_bytes(tmp_path / "b.zarr")
    store = FeatureStore.open(tmp_path / "a.zarr")
    feats = store.array(store.keys()[0])[:]
    assert feats.shape[1] == 2 and not np.array_equal(feats[:, 0], feats[:, 1])
    run_tiny(tmp_path / "plain.zarr", **{**cfg, "aug": "none"})
    plain = FeatureStore.open(tmp_path / "plain.zarr")
    assert not np.array_equal(plain.array(plain.keys()[0])[:], feats)  # the crops changed the inputs
    assert store.attrs["key"]["aug"] == "crop-flip" and "aug" not in plain.attrs["key"]


def test_augmenting_an_evaluation_split_is_refused(tmp_path, image_folder):
    with pytest.raises(ValueError, match="--aug crop-flip is for training splits"):
        run_tiny(
            tmp_path / "s.zarr", data="imagefolder", data_root=image_folder, split="test", aug="crop-flip"
        )


def test_store_records_classes_names_counts_and_selection(tmp_path, monkeypatch):
    fake.cub(tmp_path / "data")
    summary = run_tiny(
        tmp_path / "s.zarr",
        data="cub",
        data_root=tmp_path / "data",
        per_class=1,
        ts=(10,),
        blocks=(7,),
        pools=(1,),
    )
    store = FeatureStore.open(tmp_path / "s.zarr")
    dataset = store.attrs["provenance"]["dataset"]
    assert summary.images == 3 and dataset["class_counts"] == [1, 1, 1]
    assert dataset["classes"] == ["1", "2", "3"] and dataset["class_names"][1] == "002.Laysan_Albatross"
    assert "selection" in store.attrs["key"]["dataset"] and store.attrs["key"]["per_class"] == 1


def test_resuming_with_an_edited_image_list_is_refused(tmp_path, textured_folder):
    """The key holds a digest of the ids a list selected, not the list's path: an edited list
    cannot silently resume (or reuse) a store made from the old one."""
    from extract.store.schema import StoreError

    listing = tmp_path / "list.txt"
    listing.write_text("a/0.png\nb/1.png\n")
    cfg = dict(
        data="imagefolder",
        data_root=textured_folder,
        shard_rows=4,
        ts=(10,),
        blocks=(7,),
        pools=(1,),
        subset=listing,
    )
    run_tiny(tmp_path / "s.zarr", **cfg)
    listing.write_text("a/0.png\nb/2.png\n")
    with pytest.raises(StoreError, match="made with other arguments .*dataset.selection"):
        run_tiny(tmp_path / "s.zarr", **cfg)
    moved = tmp_path / "moved.txt"
    moved.write_text("a/0.png\nb/1.png\n")
    # same ids from another path: nothing to redo
    assert run_tiny(tmp_path / "s.zarr", **{**cfg, "subset": moved}).images == 0


def test_a_shuffled_store_holds_the_same_features_in_a_seeded_row_order(tmp_path, fmnist_env):
    """--order shuffled: the rows are a permutation of the sorted store's, each with the same
    features (noise is keyed by the dataset index), and the order is keyed."""
    import numpy as np

    from extract.store.schema import FeatureKey, FeatureStore
    from tests.conftest import run_tiny

    run_tiny(tmp_path / "sorted.zarr", ts=(10,), blocks=(7,), pools=(2,), limit=32)
    run_tiny(tmp_path / "shuffled.zarr", ts=(10,), blocks=(7,), pools=(2,), limit=32, order="shuffled")
    a, b = FeatureStore.open(tmp_path / "sorted.zarr"), FeatureStore.open(tmp_path / "shuffled.zarr")
    ia, ib = a.index(), b.index()
    assert sorted(ib) == list(ia) and list(ib) != list(ia)
    where = {int(i): r for r, i in enumerate(ia)}
    perm = [where[int(i)] for i in ib]
    key = FeatureKey(10, 7, 2)
    np.testing.assert_array_equal(b.array(key)[:], a.array(key)[:][perm])
    assert (b.labels() == a.labels()[perm]).all() and list(b.ids()) == list(a.ids()[perm])
    assert (
        b.attrs["key"]["dataset"]["order"] == "shuffled (seed 0)" and "order" not in a.attrs["key"]["dataset"]
    )
