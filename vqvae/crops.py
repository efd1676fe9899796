"""Training crops from a folder of photos: the ``photos`` dataset.

A network that codes photos at their own resolution learns best from pieces of photos at
the scale it will see them, not from whole photos shrunk to thumbnails (CIFAR-10's 32 x 32
images hold little of a photo's fine detail). :func:`photo_crops` reads every photo under a
folder (any depth, any size, no class folders) and cuts ``count`` square crops of
``size`` pixels out of it at several scales:

- each photo is taken at its own size halved 0, 1, 2, ... times (Lanczos), keeping the
  levels whose short side lies in [:data:`MIN_SHORT`, :data:`MAX_SHORT`] pixels (a photo
  whose every level falls outside keeps the one nearest the range): a camera's full
  resolution is mostly blur, noise and JPEG blocks at the pixel level, while a half-megapixel
  photo, the size a visitor's photo is shown at, has detail in every cell;
- the crops are shared evenly between the (photo, level) pairs, at uniformly random places,
  half of them mirrored left to right;
- everything follows from ``seed``, and the result (uint8 (N, C, S, S)) is cached on disk
  keyed by the files, their sizes and times, and the options.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .data import cached_array

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MIN_SHORT = 256  # the smallest short side a photo is taken at
MAX_SHORT = 1536  # the largest (finer levels are halved until they fit)
# crops of a split at 32 x 32 pixels; larger crops get as many pixels in all
CROPS_AT_32 = {"train": 100_000, "test": 5_000}


class PhotoFolderError(FileNotFoundError):
    """The folder of photos is missing, empty, or holds no photo large enough to crop."""


def default_count(split: str, size: int) -> int:
    """How many ``size`` crops a split gets by default: :data:`CROPS_AT_32`'s pixels."""
    return max(1, CROPS_AT_32[split] * 32 * 32 // (size * size))


def photo_files(folder: Path) -> list[Path]:
    """The photos under ``folder`` (any depth), sorted by path; hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoFolderError(f"photo folder {folder} does not exist")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise PhotoFolderError(
            f"{folder}: no photos found (looked for {', '.join(IMAGE_SUFFIXES)} at any depth)"
        )
    return files


def levels(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """The (width, height) a photo is cropped at: its size halved 0, 1, 2, ... times, the
    short side within [MIN_SHORT, MAX_SHORT] and at least ``size``; where none is, the one
    level nearest the range that still holds a crop (none when the photo is smaller than
    ``size``)."""
    sizes, k = [], 0
    while min(width, height) >> k >= size:
        sizes.append((width >> k, height >> k))
        k += 1
    inside = [s for s in sizes if MIN_SHORT <= min(s) <= MAX_SHORT]
    if inside or not sizes:
        return inside
    # all too large or all too small: the smallest of the too-large, or the largest
    too_large = [s for s in sizes if min(s) > MAX_SHORT]
    return [too_large[-1]] if too_large else [sizes[0]]


def _open(path: Path, channels: int):
    """The photo as an 8-bit PIL image of ``channels`` (vqvae.images.load_image: EXIF
    orientation, transparency, 16-bit and size limits as for an upload)."""
    from .images import ImageError, load_image

    try:
        im, _ = load_image(path)
    except ImageError as e:
        raise PhotoFolderError(f"{path}: {e}") from e
    return im.convert("L" if channels == 1 else "RGB")


def _cache_key(files: list[Path], size: int, channels: int, count: int, seed: int) -> str:
    h = hashlib.sha1(f"{size}|{channels}|{count}|{seed}|{MIN_SHORT}|{MAX_SHORT}".encode())
    for p in files:
        st = os.stat(p)
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def photo_crops(
    folder,
    size: int = 32,
    count: int = 100_000,
    *,
    channels: int = 3,
    seed: int = 0,
    cache: Path | None = None,
) -> torch.Tensor:
    """``count`` crops of ``size`` x ``size`` pixels from the photos under ``folder``, as
    uint8 (count, channels, size, size), in photo order (see the module docstring). With
    ``cache`` (a folder) the result is kept there as .npy and reused."""
    if size < 1 or count < 1:
        raise ValueError(f"size and count must be >= 1, got {size} and {count}")
    folder = Path(folder)
    files = photo_files(folder)
    if cache is None:
        return _cut(folder, files, size, count, channels, seed)
    key = _cache_key(files, size, channels, count, seed)
    return cached_array(
        Path(cache) / f"photo-crops-{folder.name}-{key}.npy",
        lambda: _cut(folder, files, size, count, channels, seed),
    )


def _cut(folder: Path, files: list[Path], size: int, count: int, channels: int,
         seed: int) -> torch.Tensor:  # fmt: skip
    """:func:`photo_crops`' crops of ``files``, computed."""
    from PIL import Image

    pairs = []  # (file, width, height) per level
    for p in files:
        try:
            with Image.open(p) as im:  # the size from the header, without decoding
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w  # turned a quarter by its EXIF orientation
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise PhotoFolderError(f"{p}: not a readable image ({e})") from e
        pairs += [(p, lw, lh) for lw, lh in levels(w, h, size)]
    if not pairs:
        raise PhotoFolderError(f"{folder}: no photo has a side of {size} pixels or more")
    share = np.full(len(pairs), count // len(pairs))
    share[: count % len(pairs)] += 1
    rng = np.random.default_rng(seed)
    out = np.empty((count, channels, size, size), np.uint8)
    i, opened = 0, (None, None)
    for (p, lw, lh), n in zip(pairs, share, strict=True):
        if n == 0:
            continue
        if opened[0] != p:
            opened = (p, _open(p, channels))
        im = opened[1]
        level = im if im.size == (lw, lh) else im.resize((lw, lh), Image.Resampling.LANCZOS)
        a = np.asarray(level)
        a = a[..., None] if a.ndim == 2 else a
        ys = rng.integers(0, lh - size + 1, n)
        xs = rng.integers(0, lw - size + 1, n)
        flip = rng.random(n) < 0.5
        for y, x, f in zip(ys, xs, flip, strict=True):
            c = a[y : y + size, x : x + size]
            out[i] = (c[:, ::-1] if f else c).transpose(2, 0, 1)
            i += 1
    return torch.from_numpy(out)
