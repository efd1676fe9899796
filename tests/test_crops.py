"""The ``photos`` dataset: crops of a folder of photos at several scales (vqvae.crops), and
the photo set built from Debian's wallpaper packages (train.photo_set)."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train import photo_set
from vqvae import crops
from vqvae.crops import PhotoFolderError, levels, photo_crops
from vqvae.data import DatasetNotFoundError, load_labels, load_uint8


def _noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def test_levels_keep_the_scales_a_shown_photo_has():
    # 12 MP: halved until the short side is at most 1536, down to 256
    assert levels(4000, 3000, 32) == [(2000, 1500), (1000, 750), (500, 375)]
    assert levels(1024, 1024, 32) == [(1024, 1024), (512, 512), (256, 256)]
    # a small photo keeps its own size; a crop never comes from a level smaller than itself
    assert levels(300, 200, 32) == [(300, 200)]
    assert levels(300, 200, 250) == []
    assert levels(20, 20, 32) == []
    # a long, thin one
    assert levels(40_000, 2000, 32) == [(20_000, 1000), (10_000, 500)]
    # crops larger than the range: the smallest level that holds one
    assert levels(5000, 4000, 2000) == [(2500, 2000)]


def _find(crop: np.ndarray, photo: np.ndarray) -> bool:
    """Whether ``crop`` (S, S, C) is a window of ``photo`` (H, W, C), maybe mirrored."""
    s = crop.shape[0]
    for c in (crop, crop[:, ::-1]):
        ys, xs = np.nonzero((photo[: 1 - s or None, : 1 - s or None] == c[0, 0]).all(-1))
        for y, x in zip(ys, xs, strict=True):
            if np.array_equal(photo[y : y + s, x : x + s], c):
                return True
    return False


@pytest.fixture
def photo_folder(tmp_path):
    """Photos of several sizes and modes, one in a subfolder, plus files to skip."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    _noise(300, 200, 0).save(root / "a.png")
    _noise(120, 90, 1, "L").save(root / "sub" / "grey.png")
    _noise(64, 64, 2, "RGBA").save(root / "alpha.png")
    _noise(20, 20, 3).save(root / "tiny.png")  # smaller than a crop: skipped
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden").mkdir()
    _noise(300, 300, 4).save(root / ".hidden" / "x.png")
    return root


def test_crops_are_windows_of_the_photos_in_photo_order(photo_folder):
    x = photo_crops(photo_folder, 32, 30, seed=5)
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    # three photos at one level each: ten crops each, in path order (a, alpha, sub/grey)
    a = np.asarray(Image.open(photo_folder / "a.png"))
    grey = np.asarray(Image.open(photo_folder / "sub" / "grey.png").convert("RGB"))
    hwc = x.permute(0, 2, 3, 1).numpy()
    assert all(_find(c, a) for c in hwc[:10])
    assert all(_find(c, grey) for c in hwc[20:])
    assert (hwc[20:, ..., 0] == hwc[20:, ..., 1]).all()  # grey stays grey in RGB
    # the same seed gives the same crops, another seed others; greyscale output
    assert torch.equal(photo_crops(photo_folder, 32, 30, seed=5), x)
    assert not torch.equal(photo_crops(photo_folder, 32, 30, seed=6), x)
    assert photo_crops(photo_folder, 16, 7, channels=1).shape == (7, 1, 16, 16)


def test_a_large_photo_is_cropped_at_each_of_its_levels(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    _noise(1200, 600, 0).save(root / "big.png")
    assert levels(1200, 600, 32) == [(1200, 600), (600, 300)]
    x = photo_crops(root, 32, 40, seed=1).permute(0, 2, 3, 1).numpy()
    full = np.asarray(Image.open(root / "big.png"))
    assert all(_find(c, full) for c in x[:20])  # level 0: windows of the photo itself
    assert not any(_find(c, full) for c in x[20:])  # level 1: of the photo halved


def test_crops_are_cached_and_a_changed_photo_is_read_again(photo_folder, tmp_path):
    cache = tmp_path / "cache"
    x = photo_crops(photo_folder, 32, 12, cache=cache)
    (npy,) = cache.glob("photo-crops-photos-*.npy")
    np.save(npy, np.zeros((12, 3, 32, 32), np.uint8))  # the cached file is what is read
    assert photo_crops(photo_folder, 32, 12, cache=cache).sum() == 0
    _noise(300, 200, 9).save(photo_folder / "a.png")
    y = photo_crops(photo_folder, 32, 12, cache=cache)
    assert y.sum() > 0 and not torch.equal(x, y) and len(list(cache.glob("*.npy"))) == 2


def test_bad_photo_folders_are_clear_errors(tmp_path, photo_folder):
    with pytest.raises(PhotoFolderError, match="does not exist"):
        photo_crops(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhotoFolderError, match="no photos found"):
        photo_crops(tmp_path / "empty")
    with pytest.raises(PhotoFolderError, match="no photo has a side of 400 pixels"):
        photo_crops(photo_folder, 400, 5)
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(PhotoFolderError, match="broken.jpg"):
        photo_crops(photo_folder, 32, 5)
    with pytest.raises(ValueError, match=">= 1"):
        photo_crops(photo_folder, 32, 0)


def test_the_photos_dataset_through_load_uint8(tmp_path, monkeypatch):
    monkeypatch.setenv("VQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(crops.CROPS_AT_32, "train", 24)
    monkeypatch.setitem(crops.CROPS_AT_32, "test", 8)
    root = tmp_path / "set"
    with pytest.raises(DatasetNotFoundError, match="photo_set"):
        load_uint8("photos", tmp_path, "train")
    for split, seed in (("train", 0), ("test", 1)):
        (root / split).mkdir(parents=True)
        _noise(200, 150, seed).save(root / split / "p.png")
    x, info = load_uint8("photos", root, "train")
    assert x.shape == (24, 3, 32, 32) and info.name == "photos" and info.image_size == 32
    # 64 px crops: as many pixels, a quarter of the crops
    assert load_uint8("photos", root, "train", image_size=64)[0].shape == (6, 3, 64, 64)
    assert load_uint8("photos", root, "test")[0].shape == (8, 3, 32, 32)
    labels, names = load_labels("photos", root, "test")
    assert names == ["photo"] and labels.tolist() == [0] * 8


# ----------------------------------------------------------------------------- photo_set
def _fake_debs(folder: Path, drop: str | None = None) -> None:
    """Packages named as photo_set's, holding its listed files (small PNGs) and a
    copyright file each: built with dpkg-deb."""
    for package in photo_set.PACKAGES:
        tree = folder / f"tree-{package}"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\n"
            f"Maintainer: test <t@example.org>\nDescription: test\n"
        )
        doc = tree / "usr/share/doc" / package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(f"Files: *\nLicense: CC0-1.0 ({package})\n")
        for i, (p, path, _) in enumerate(photo_set.PHOTOS):
            if p == package and path != drop:
                (tree / path).parent.mkdir(parents=True, exist_ok=True)
                _noise(40, 30, i).save(tree / path, format="PNG")
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree),
                        str(folder / f"{package}_1.2-3_all.deb")], check=True,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(tree)


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


@needs_dpkg
def test_the_photo_set_is_built_from_the_packages_with_its_sources(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    _fake_debs(debs)
    out = tmp_path / "photos"
    rec = photo_set.build(out, debs)
    train, test = sorted((out / "train").iterdir()), sorted((out / "test").iterdir())
    assert (
        (len(train), len(test))
        == (34, 5)
        == (
            sum(s == "train" for *_, s in photo_set.PHOTOS),
            sum(s == "test" for *_, s in photo_set.PHOTOS),
        )
    )
    assert (out / "test" / "EveningGlow.jpg").is_file()  # Plasma's, named by their folder
    saved = json.loads((out / "SOURCES.json").read_text())
    assert saved == rec and len(saved["photos"]) == 39
    for ph in saved["photos"]:
        data = (out / ph["file"]).read_bytes()
        assert ph["sha256"] == hashlib.sha256(data).hexdigest() and ph["version"] == "1.2-3"
    for package in photo_set.PACKAGES:
        assert package in (out / "licenses" / f"{package}.copyright").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # the dataset reads it
    assert len(crops.photo_files(out / "train")) == 34
    with pytest.raises(photo_set.PhotoSetError, match="exists"):
        photo_set.build(out, debs)


@needs_dpkg
def test_a_package_without_a_listed_photo_leaves_nothing(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    missing = photo_set.PHOTOS[3][1]
    _fake_debs(debs, drop=missing)
    with pytest.raises(photo_set.PhotoSetError, match=Path(missing).name):
        photo_set.build(tmp_path / "photos", debs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["debs"]
    with pytest.raises(photo_set.PhotoSetError, match=r"no plasma-workspace-wallpapers_\*\.deb"):
        photo_set.build(tmp_path / "photos", tmp_path / "nowhere")
