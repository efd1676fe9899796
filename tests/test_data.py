"""Dataset loading: clear errors, image folders, MNIST idx files, the CIFAR-10 JPEG tarball
(unpacked safely, once, into the cache) and the real MNIST."""

import io
import tarfile
import threading
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
    with pytest.raises(FileNotFoundError):  # what callers who know nothing of us catch
        load_uint8("folder", tmp_path / "nowhere")


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


def test_mnist_idx_files_load_as_uint8(mnist_dir):
    d = np.load(DATA / "mnist_small.npz")
    for split in ("train", "test"):
        x, info = load_uint8("mnist", mnist_dir, split)
        assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(d[f"{split}_images"]))
        assert (info.name, info.channels, info.image_size) == ("mnist", 1, 28)
        assert info.source == "MNIST (torchvision idx files)"
    ds = get_dataset("mnist", mnist_dir, "test")
    img, label = ds[3]
    assert len(ds) == 128 and label == 0 and img.dtype == torch.float32
    assert torch.equal(img, torch.from_numpy(d["test_images"][3]).float() / 255.0)


# -- the CIFAR-10 JPEG tarball ------------------------------------------------------------------


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data))


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _cifar_tarball(root: Path, extra=()) -> Path:
    """cifar10-jpeg.tar.gz as ../shared/data has it: cifar10-jpeg/{train,test}/<class>/*.jpg,
    plus ``extra`` members (name, data, TarInfo attributes)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar10-jpeg.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for split in ("train", "test"):
            for i, colour in enumerate(COLOURS[:2]):
                _add(tf, f"cifar10-jpeg/{split}/c{i}/0000.jpg", _jpeg(colour))
        for name, data, kw in extra:
            _add(tf, name, data, **kw)
    return path


def test_cifar10_jpeg_tarball_is_unpacked_into_the_cache(tmp_path):
    root = tmp_path / "data"
    _cifar_tarball(root)
    x, info = load_uint8("cifar10", root, "train")
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    assert info.source == "CIFAR-10 (JPEG q75 copy)"
    assert x[0, :, 16, 16].tolist() == pytest.approx(list(COLOURS[0]), abs=3)
    assert [p.name for p in root.iterdir()] == ["cifar10-jpeg.tar.gz"], "nothing beside it"
    unpacked = cache_dir() / "cifar10-jpeg-unpacked"
    assert (unpacked / ".complete").is_file() and (unpacked / "cifar10-jpeg" / "test").is_dir()
    assert load_uint8("cifar10", root, "test")[0].shape == (2, 3, 32, 32)
    assert sorted(p.name for p in cache_dir().iterdir()) == ["arrays", "cifar10-jpeg-unpacked"]


ESCAPES = {  # members that would write outside the destination: (name, data, attributes)
    "symlink out, then a file through it": [
        ("cifar10-jpeg/train/c9", b"", {"type": tarfile.SYMTYPE, "linkname": "{outside}"}),
        ("cifar10-jpeg/train/c9/evil.jpg", b"gotcha", {}),
    ],
    "relative symlink out, then a file through it": [
        ("cifar10-jpeg/c9", b"", {"type": tarfile.SYMTYPE, "linkname": "../../../outside"}),
        ("cifar10-jpeg/c9/evil.jpg", b"gotcha", {}),
    ],
    "dot-dot name": [("cifar10-jpeg/../../../outside/evil.jpg", b"gotcha", {})],
    "hard link to a file outside": [
        ("cifar10-jpeg/hard.jpg", b"", {"type": tarfile.LNKTYPE, "linkname": "{outside}/x.jpg"}),
    ],
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["data filter", "fallback"])
@pytest.mark.parametrize("kind", ESCAPES)
def test_tarball_cannot_write_outside_the_cache(tmp_path, monkeypatch, kind, data_filter):
    if not data_filter:  # as on a Python without tarfile's extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"precious")
    members = [
        (n, d, {k: v.format(outside=outside) if k == "linkname" else v for k, v in kw.items()})
        for n, d, kw in ESCAPES[kind]
    ]
    root = tmp_path / "vqvae-cache" / "a" / "b" / "data"  # "../../.." of the cache: outside
    _cifar_tarball(root, members)
    with pytest.raises(ValueError, match="unsafe archive member"):
        load_uint8("cifar10", root, "train")
    assert sorted(p.name for p in outside.iterdir()) == ["x.jpg"]
    assert (outside / "x.jpg").read_bytes() == b"precious"
    assert not list(tmp_path.rglob("evil.jpg"))
    left = [p.name for p in cache_dir().iterdir() if p.name != "a"]
    assert left == [], "no unpacked folder, no temp folder left behind"


def test_concurrent_unpacks_do_not_collide(tmp_path, monkeypatch):
    """Two loaders (as two DDP ranks) unpacking at the same moment both get the data."""
    root = tmp_path / "data"
    _cifar_tarball(root)
    both_inside = threading.Barrier(2, timeout=30)
    extract = tarfile.TarFile.extractall

    def extract_together(self, *a, **kw):
        both_inside.wait()  # each is half-way through its unpack when the other starts
        return extract(self, *a, **kw)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extract_together)
    results, errors = [], []

    def load():
        try:
            results.append(load_uint8("cifar10", root, "test")[0])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2 and torch.equal(results[0], results[1])
    assert sorted(p.name for p in cache_dir().iterdir()) == ["arrays", "cifar10-jpeg-unpacked"]


def test_unpack_killed_half_way_is_redone(tmp_path):
    root = tmp_path / "data"
    _cifar_tarball(root)
    stale = cache_dir() / "cifar10-jpeg-unpacked"
    (stale / "cifar10-jpeg" / "train").mkdir(parents=True)  # no .complete: killed
    (stale / "junk").write_text("half")
    x, _ = load_uint8("cifar10", root, "train")
    assert x.shape == (2, 3, 32, 32)
    assert (stale / ".complete").is_file() and not (stale / "junk").exists()


@pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no MNIST in ../shared/data"
)
def test_real_mnist_loads_and_matches_the_fixture():
    x, info = load_uint8("mnist", SHARED_DATA, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert (info.channels, info.image_size) == (1, 28)
    d = np.load(DATA / "mnist_small.npz")
    assert torch.equal(x[:128], torch.from_numpy(d["test_images"]))


def test_spread_takes_every_class_of_a_sorted_split():
    from vqvae.data import spread

    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as CIFAR-10's copy
    pick = spread(len(labels), 50)
    assert len(pick) == 50 and torch.equal(pick, pick.sort().values)
    assert len(set(pick.tolist())) == 50 and int(pick.max()) < 1000
    assert torch.bincount(labels[pick], minlength=10).tolist() == [5] * 10
    assert torch.equal(spread(7, 0), torch.arange(7)) and torch.equal(spread(7, 9), torch.arange(7))
    assert torch.equal(spread(7, 7), torch.arange(7)) and len(spread(0, 3)) == 0
    with pytest.raises(TypeError):
        spread(10, 2.5)
