"""Dataset loading: clear errors, image folders, the real MNIST, and the committed fixture."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae.data import DatasetNotFoundError, cache_dir, get_dataset, load_uint8

DATA = Path(__file__).parent / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data

COLOURS = [(255, 0, 0), (0, 128, 255), (10, 200, 30)]


@pytest.fixture
def image_folder(tmp_path):
    """train/ and test/ with one class folder of solid-colour 40x30 PNGs."""
    root = tmp_path / "shapes"
    for split in ("train", "test"):
        (root / split / "blobs").mkdir(parents=True)
        for i, c in enumerate(COLOURS):
            Image.new("RGB", (40, 30), c).save(root / split / "blobs" / f"{i}.png")
    return root


def test_missing_folder_is_a_clear_error(tmp_path):
    for name in ("mnist", "cifar10", "folder"):
        with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'nowhere'} does not exist"):
            load_uint8(name, tmp_path / "nowhere")
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_folder_without_split_says_where_images_go(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"test does not exist.*train/<class>/\*\.png"):
        load_uint8("folder", tmp_path, "test")
    with pytest.raises(DatasetNotFoundError, match="no images found"):
        load_uint8("folder", tmp_path, "train")


def test_bad_names_and_splits(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_uint8("imagenet", tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_uint8("folder", tmp_path, "val")


def test_folder_dataset_loads_as_uint8(image_folder):
    x, info = load_uint8("folder", image_folder, "train", image_size=16, channels=3)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert (info.channels, info.image_size, info.name) == (3, 16, "folder")
    for img, colour in zip(
        x, COLOURS, strict=False
    ):  # files come back in name order, colours intact
        assert img.flatten(1).unique(dim=1).t().tolist() == [list(colour)]
    grey, _ = load_uint8("folder", image_folder, "test", image_size=8, channels=1)
    assert grey.shape == (3, 1, 8, 8)
    expected = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in COLOURS]
    assert grey[:, 0, 0, 0].tolist() == pytest.approx(expected, abs=1)


def test_folder_dataset_is_cached_in_vqvae_cache(image_folder, tmp_path):
    assert cache_dir() == tmp_path / "vqvae-cache"  # the conftest fixture
    x, _ = load_uint8("folder", image_folder, "train", image_size=16)
    cached = list((tmp_path / "vqvae-cache" / "arrays").glob("*.npy"))
    assert len(cached) == 1
    assert torch.equal(torch.from_numpy(np.load(cached[0])), x)
    again, _ = load_uint8("folder", image_folder, "train", image_size=16)
    assert torch.equal(again, x)
    # a new file changes the key: no stale cache
    Image.new("RGB", (40, 30), (0, 0, 0)).save(image_folder / "train" / "blobs" / "3.png")
    assert load_uint8("folder", image_folder, "train", image_size=16)[0].shape[0] == 4


def test_get_dataset_yields_floats_in_unit_range(image_folder):
    ds = get_dataset("folder", image_folder, "test", image_size=8)
    img, label = ds[0]
    assert len(ds) == 3 and img.shape == (3, 8, 8) and img.dtype == torch.float32
    assert img[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_fixture_is_small_mnist():
    assert os.path.getsize(DATA / "mnist_small.npz") < 600_000
    d = np.load(DATA / "mnist_small.npz")
    assert d["train_images"].shape == (512, 1, 28, 28) and d["train_images"].dtype == np.uint8
    assert d["test_images"].shape == (128, 1, 28, 28)
    assert set(d["train_labels"].tolist()) == set(range(10))


def test_mnist_small_fixture(mnist_small):
    assert mnist_small.train.shape == (512, 1, 28, 28) and mnist_small.train.dtype == torch.float32
    assert 0 <= mnist_small.train.min() and mnist_small.train.max() <= 1
    assert mnist_small.test_labels.shape == (128,)


@pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no MNIST in ../shared/data"
)
def test_real_mnist_loads_and_matches_the_fixture():
    x, info = load_uint8("mnist", SHARED_DATA, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert (info.channels, info.image_size) == (1, 28)
    d = np.load(DATA / "mnist_small.npz")
    assert torch.equal(x[:128], torch.from_numpy(d["test_images"]))
