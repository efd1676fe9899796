"""Dataset registry: ``mnist``, ``fashion-mnist``, ``cifar10``, ``folder`` and ``photos``.

Every dataset yields ``(image, label)`` with ``image`` a float tensor in [0, 1] of shape
(C, H, W). :func:`load_uint8` returns a whole split as one uint8 tensor (N, C, H, W),
which training keeps on the GPU for small datasets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import atomic_write

DATASETS = ("mnist", "fashion-mnist", "cifar10", "folder", "photos")
CIFAR_JPEG_TARBALL = "cifar10-jpeg.tar.gz"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was asked for and cannot be downloaded."""


def spread(total: int, n: int) -> torch.Tensor:
    """Indices (n,) int64 of ``n`` items evenly spread over ``total``, in order (all of them
    when n <= 0 or n >= total). What a "use only N images" option takes: a split may be
    sorted by class (this project's CIFAR-10 copy is), so its first N items can all be one
    class, while an evenly spread N has every class in its share."""
    if isinstance(n, bool) or not isinstance(n, int) or not isinstance(total, int):
        raise TypeError(f"total and n must be ints, got {total!r} and {n!r}")
    if n <= 0 or n >= total:
        return torch.arange(max(total, 0))
    return torch.arange(n) * total // n


def cache_dir() -> Path:
    """Where unpacked archives and decoded arrays go: $VQVAE_CACHE or ~/.cache/vqvae."""
    return Path(os.environ.get("VQVAE_CACHE", Path.home() / ".cache" / "vqvae"))


@dataclass
class DataInfo:
    name: str
    source: str  # which copy of the data, e.g. "CIFAR-10 (JPEG q75 copy)"
    channels: int
    image_size: int


def _check_split(split: str) -> bool:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split == "train"


def _torchvision_digits(name: str, root: Path, split: str):
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    folder = cls.__name__
    try:
        ds = cls(str(root), train=_check_split(split), download=True)
    except Exception as e:  # offline download failures come as URLError, RuntimeError, ...
        raise DatasetNotFoundError(
            f"{name}: not found under {root} and could not be downloaded ({type(e).__name__}: "
            f"{e}). Put the four idx files (train-images-idx3-ubyte, ...) in "
            f"{root / folder / 'raw'}, or point --data-dir at a folder that has them."
        ) from e
    return ds.data[:, None].contiguous(), DataInfo(name, f"{folder} (torchvision idx files)", 1, 28)


def _find_cifar_jpeg(root: Path) -> Path | None:
    """The ImageFolder root of the CIFAR-10 JPEG copy, unpacking its tarball into the cache
    (never next to the tarball) the first time."""
    for cand in (root / "cifar10-jpeg", root):
        if (cand / "train").is_dir() and (cand / "test").is_dir() and cand.name == "cifar10-jpeg":
            return cand
    tarball = root / CIFAR_JPEG_TARBALL
    if not tarball.is_file():
        return None
    dest = _unpack_tarball(tarball, cache_dir() / "cifar10-jpeg-unpacked")
    hits = [p.parent for p in dest.rglob("train") if (p.parent / "test").is_dir()]
    return hits[0] if hits else None


def _unpack_tarball(tarball: Path, dest: Path) -> Path:
    """Unpack ``tarball`` into the folder ``dest`` once, safely, and return ``dest``.

    Members that would land outside ``dest`` (``..`` in names, links pointing out of it) or
    are devices make it a ValueError and nothing is kept (tarfile's ``data`` filter).
    It is unpacked into a uniquely named folder beside ``dest`` and renamed into place when
    complete, so a killed unpack leaves nothing half-done and processes unpacking at once
    (DDP ranks) never share a folder: the first to finish wins, the others drop their copy."""
    done = dest / ".complete"
    if done.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        with tarfile.open(tarball) as tf:
            try:
                if hasattr(tarfile, "data_filter"):  # Python 3.12, 3.11.4+, 3.10.12+
                    tf.extractall(tmp, filter="data")
                else:
                    tf.extractall(tmp, members=_safe_members(tf))
            except tarfile.TarError as e:  # FilterError and friends
                raise ValueError(
                    f"{tarball}: refusing to unpack an unsafe archive member ({e})"
                ) from e
        (tmp / ".complete").touch()
        for _ in range(3):
            try:
                os.rename(tmp, dest)  # atomic; fails if dest exists and is not empty
                return dest
            except OSError:
                if done.is_file():  # another process finished first: use its copy
                    return dest
                if dest.exists():  # a leftover of an unpack that was killed: set it aside
                    _remove_tree(dest)
        raise OSError(f"could not move the unpacked {tarball.name} to {dest}")
    finally:
        _remove_tree(tmp)


def _safe_members(tf: tarfile.TarFile):
    """For Pythons without tarfile's data filter: plain files and folders with relative
    names inside the destination, nothing else (no links, devices or FIFOs)."""
    for m in tf.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise ValueError(f"{tf.name}: refusing to unpack unsafe archive member {m.name!r}")
        m.mode = (m.mode | 0o600) & 0o755  # no set-uid bits, always readable by us
        yield m


def _remove_tree(path: Path) -> None:
    """Remove ``path`` (a folder) if it exists, atomically setting it aside first so that a
    reader never sees it half-deleted."""
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    try:
        os.replace(path, aside / path.name)
    except FileNotFoundError:
        pass
    shutil.rmtree(aside, ignore_errors=True)


def _cifar10(root: Path, split: str):
    from torchvision import datasets

    train = _check_split(split)
    if (root / "cifar-10-batches-py").is_dir():
        ds = datasets.CIFAR10(str(root), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return x, DataInfo("cifar10", "CIFAR-10 (original, torchvision)", 3, 32)
    jpeg = _find_cifar_jpeg(root)
    if jpeg is not None:
        x = _folder_uint8(jpeg / split, channels=3, image_size=32)
        return x, DataInfo("cifar10", "CIFAR-10 (JPEG q75 copy)", 3, 32)
    try:
        ds = datasets.CIFAR10(str(root), train=train, download=True)
    except Exception as e:
        raise DatasetNotFoundError(
            f"cifar10: not found under {root} and could not be downloaded ({type(e).__name__}). "
            f"Put torchvision's cifar-10-batches-py/ folder there, or {CIFAR_JPEG_TARBALL}, or an "
            f"unpacked cifar10-jpeg/{{train,test}}/<class>/*.jpg folder."
        ) from e
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, DataInfo("cifar10", "CIFAR-10 (original, torchvision)", 3, 32)


def image_transform(channels: int, image_size: int):
    """PIL image -> uint8 tensor (C, S, S): fix EXIF orientation, convert to the channels,
    resize the short side to S and centre-crop."""
    from PIL import ImageOps
    from torchvision.transforms import v2

    mode = "L" if channels == 1 else "RGB"
    return v2.Compose(
        [
            lambda im: ImageOps.exif_transpose(im).convert(mode),
            v2.PILToTensor(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
        ]
    )


def _folder_uint8(path: Path, channels: int, image_size: int) -> torch.Tensor:
    """Decode an image folder (any depth of subfolders) to uint8 (N, C, S, S), cached on disk
    keyed by the folder, its file list and the requested size."""
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise DatasetNotFoundError(f"image folder {path} does not exist")
    try:
        ds = ImageFolder(str(path), transform=image_transform(channels, image_size))
    except FileNotFoundError as e:
        raise DatasetNotFoundError(
            f"{path}: no images found. A folder dataset needs images in class subfolders, "
            f"e.g. {path}/<class>/xxx.png (one class folder is fine)."
        ) from e
    key = hashlib.sha1(
        f"{path.resolve()}|{channels}|{image_size}|{len(ds)}|"
        f"{os.stat(ds.samples[-1][0]).st_mtime_ns}".encode()
    ).hexdigest()[:16]

    def decode() -> torch.Tensor:
        from torch.utils.data import DataLoader

        loader = DataLoader(ds, batch_size=512, num_workers=min(4, os.cpu_count() or 1))
        return torch.cat([b for b, _ in loader])

    return cached_array(cache_dir() / "arrays" / f"{path.name}-{key}.npy", decode)


def cached_array(path: Path, build) -> torch.Tensor:
    """The array saved at ``path`` (.npy) as a tensor; if there is none, ``build()``'s
    tensor, saved there first (atomically: a killed run leaves no half file)."""
    if path.is_file():
        return torch.from_numpy(np.load(path))
    x = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.save(f, x.numpy())
    return x


def load_uint8(
    name: str,
    root,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
) -> tuple[torch.Tensor, DataInfo]:
    """A whole split as uint8 (N, C, H, W) plus a :class:`DataInfo`.

    ``name`` is one of :data:`DATASETS`. For ``folder``, ``root`` holds ``train/`` and
    ``test/`` subfolders of images (in class subfolders, as torchvision's ImageFolder wants),
    and ``image_size`` (default 32) and ``channels`` (default 3) say what to resize to.
    For ``photos``, ``root`` holds ``train/`` and ``test/`` folders of photos of any size
    (any depth, no class folders needed), and each split is crops of ``image_size`` pixels
    taken at several scales (:func:`vqvae.crops.photo_crops`: 100,000 training and 5,000
    test crops at 32 x 32, as many pixels at other sizes).
    """
    root = Path(root).expanduser()
    _check_split(split)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"data folder {root} does not exist (dataset {name!r})")
    if name in ("mnist", "fashion-mnist"):
        return _torchvision_digits(name, root, split)
    if name == "cifar10":
        return _cifar10(root, split)
    size, ch = image_size or 32, channels or 3
    if name == "photos":
        return _photo_crops(root, split, ch, size)
    if not (root / split).is_dir():
        raise DatasetNotFoundError(
            f"folder dataset: {root / split} does not exist. Put your images in "
            f"{root}/train/<class>/*.png and {root}/test/<class>/*.png."
        )
    x = _folder_uint8(root / split, ch, size)
    return x, DataInfo("folder", f"image folder {root}", ch, size)


def _photo_crops(root: Path, split: str, channels: int, size: int):
    from .crops import PhotoFolderError, default_count, photo_crops

    try:
        x = photo_crops(
            root / split,
            size,
            default_count(split, size),
            channels=channels,
            seed=0 if split == "train" else 1,
            cache=cache_dir() / "arrays",
        )
    except PhotoFolderError as e:
        raise DatasetNotFoundError(
            f"photos dataset: {e}. Put photos of any size in {root}/train/ and {root}/test/ "
            f"(python -m train.photo_set --out {root} builds one from Debian's wallpapers)."
        ) from e
    return x, DataInfo("photos", f"crops of the photos in {root}", channels, size)


class TensorImages(Dataset):
    """A uint8 (N, C, H, W) tensor as a dataset of float images in [0, 1] (labels are 0)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, 0


def get_dataset(name: str, root, split: str = "train", **kw) -> Dataset:
    """The split as a torch Dataset of float images in [0, 1] (see :func:`load_uint8`)."""
    return TensorImages(load_uint8(name, root, split, **kw)[0])


def load_labels(name: str, root, split: str = "train") -> tuple[torch.Tensor, list[str]]:
    """The class labels of a split, int64 (N,) in the order of :func:`load_uint8`'s images,
    and the class names. ``folder`` datasets take them from their class subfolders."""
    from torchvision import datasets

    root = Path(root).expanduser()
    train = _check_split(split)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name in ("mnist", "fashion-mnist"):
        cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
        try:
            ds = cls(str(root), train=train, download=True)
        except Exception:
            _torchvision_digits(name, root, split)  # raises the clear DatasetNotFoundError
            raise
        return ds.targets.long(), list(ds.classes)
    if name == "cifar10" and (root / "cifar-10-batches-py").is_dir():
        ds = datasets.CIFAR10(str(root), train=train, download=False)
        return torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)
    if name == "cifar10":
        folder = _find_cifar_jpeg(root)
        if folder is None:
            load_uint8(name, root, split)  # downloads, or raises the usual clear error
            ds = datasets.CIFAR10(str(root), train=train, download=False)
            return torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)
        folder = folder / split
    else:
        folder = root / split
    if name == "photos":  # crops have no classes
        n = len(load_uint8(name, root, split)[0])
        return torch.zeros(n, dtype=torch.long), ["photo"]
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {folder} does not exist")
    # ImageFolder's sorted order is the order _folder_uint8 decodes the images in
    ds = datasets.ImageFolder(str(folder))
    return torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)


# The photo suite of tests and benchmarks: real photos bundled in scikit-image's wheel.
PHOTO_SUITE = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "motorcycle_left", "rocket")


def suite_photo(name: str) -> np.ndarray:
    """A photo of the suite (:data:`PHOTO_SUITE`) from scikit-image's bundled data: uint8
    (H, W, 3). scikit-image is a development dependency: ImportError naming it otherwise."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError(
            "the photo suite comes with scikit-image: pip install scikit-image"
        ) from e
    if name not in PHOTO_SUITE:
        raise ValueError(f"not a photo of the suite ({', '.join(PHOTO_SUITE)}): {name!r}")
    if name == "motorcycle_left":  # bundled as the left image of a stereo pair
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def photo_suite() -> dict[str, np.ndarray]:
    """Every photo of the suite by name: uint8 (H, W, 3) arrays."""
    return {name: suite_photo(name) for name in PHOTO_SUITE}
