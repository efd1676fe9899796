"""What a ``.vqz`` file is compared with: JPEG, WebP and AVIF files of the same image at the
size closest to it (AVIF where the installed Pillow has it: ``PIL.features.check("avif")``).

At a few dozen bytes a JPEG's header alone (quantization and Huffman tables) outweighs a
whole ``.vqz``, so sizes are matched either on whole files or on the entropy-coded data
alone (:func:`entropy_coded_bytes`).

>>> m = match_size(image, 27, "jpeg", headerless=True)  # image: (C, H, W) float in [0, 1]
>>> m.quality, m.file_bytes, m.data_bytes, m.image      # the JPEG decoded: uint8 (H, W)
>>> [(e.quality, e.bits, e.image) for e in sweep(image, "webp")]  # a rate-distortion curve
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import PIL.features
import PIL.Image
import torch

from .images import to_uint8

FORMATS = ("jpeg", "webp")  # what the codec benchmark and the app compare a .vqz with
ALL_FORMATS = (*FORMATS, "avif")  # what encode_classic and match_size take
# A rate-distortion curve's qualities: from the lowest through the usual range (CompressAI's
# JPEG curve spans about the same)
QUALITIES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)


@dataclass(frozen=True)
class SizeMatch:
    """A JPEG, WebP or AVIF file of an image at the quality closest to a target size."""

    format: str  # "jpeg", "webp" or "avif"
    quality: int  # 1..100
    data: bytes  # the whole file
    data_bytes: int  # its entropy-coded data, without headers (entropy_coded_bytes)
    image: np.ndarray  # the file decoded: uint8, the input's shape

    @property
    def file_bytes(self) -> int:
        return len(self.data)


def _uint8_image(image) -> np.ndarray:
    if torch.is_tensor(image):
        if image.dim() == 4 and len(image) == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image must be (C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
        return to_uint8(image)
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError("image must be uint8 (H, W) or (H, W, 3), or a float (C, H, W) tensor")
    return a


def encode_classic(image, fmt: str, quality: int) -> bytes:
    """A JPEG (optimized Huffman tables, PIL's default 4:2:0 chroma), lossy WebP (method 6)
    or AVIF (4:2:0, speed 6: libavif's default) file of ``image`` (uint8 (H, W) or
    (H, W, 3), or a float (C, H, W) tensor in [0, 1]). Raises ValueError for AVIF when the
    installed Pillow lacks it."""
    if fmt not in ALL_FORMATS:
        raise ValueError(f"format must be one of {', '.join(ALL_FORMATS)}, got {fmt!r}")
    if fmt == "avif" and not PIL.features.check("avif"):
        raise ValueError(f"this Pillow ({PIL.__version__}) cannot write AVIF (11.3 or newer can)")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    buf = io.BytesIO()
    im = PIL.Image.fromarray(_uint8_image(image))
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality, optimize=True)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=quality, method=6)
    else:
        im.save(buf, "AVIF", quality=quality, speed=6, subsampling="4:2:0")
    return buf.getvalue()


def available_formats() -> tuple[str, ...]:
    """The formats of :data:`ALL_FORMATS` the installed Pillow writes (AVIF needs 11.3+)."""
    return tuple(f for f in ALL_FORMATS if f != "avif" or PIL.features.check("avif"))


def decode_classic(data: bytes, grey: bool = False) -> np.ndarray:
    """A JPEG, WebP or AVIF file decoded: uint8 (H, W) with ``grey``, else (H, W, 3)."""
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("L" if grey else "RGB"))


@dataclass(frozen=True)
class Encoded:
    """An image as a JPEG, WebP or AVIF file at one quality, and the file decoded."""

    format: str
    quality: int
    data: bytes  # the whole file
    image: np.ndarray  # the file decoded: uint8, the input's shape

    @property
    def bits(self) -> int:
        """The whole file's size in bits (what its bits per pixel count)."""
        return 8 * len(self.data)


def sweep(image, fmt: str, qualities=QUALITIES) -> list[Encoded]:
    """``image`` (uint8 (H, W) or (H, W, 3), or a float (C, H, W) tensor in [0, 1]) as a
    ``fmt`` file at each of ``qualities`` (ints in 1..100): the points of its
    rate-distortion curve, in the order given. ValueError as :func:`encode_classic`."""
    image = _uint8_image(image)
    out = []
    for q in qualities:
        data = encode_classic(image, fmt, q)
        out.append(Encoded(fmt, q, data, decode_classic(data, grey=image.ndim == 2)))
    return out


def entropy_coded_bytes(data: bytes) -> int:
    """Bytes of a JPEG's, lossy WebP's or AVIF's entropy-coded data, without headers.

    JPEG: the scan data, from the end of each SOS segment's header to the next marker that
    is neither a stuffed 0xFF00 nor a restart marker (tables, frame header and JFIF/EXIF
    segments are header). WebP: the VP8 chunk's data minus its 10-byte frame header (the
    12-byte RIFF header, the 8-byte chunk header and any other chunk are header). AVIF: the
    payload of its ``mdat`` boxes (the AV1 data; every other box is header)."""
    if data[:2] == b"\xff\xd8":
        i, total = 2, 0
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError(f"not a JPEG marker at byte {i}")
            marker = data[i + 1]
            if marker == 0xD9:  # EOI
                break
            start = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            if marker != 0xDA:  # any segment but SOS is header
                i = start
                continue
            k = data.find(b"\xff", start)
            # a stuffed 0xFF data byte (FF 00) or a restart marker (FF D0..D7): still scan data
            while 0 <= k < len(data) - 1 and (data[k + 1] == 0 or 0xD0 <= data[k + 1] <= 0xD7):
                k = data.find(b"\xff", k + 2)
            if k < 0 or k == len(data) - 1:
                raise ValueError("truncated JPEG file: its scan data has no end marker")
            total += k - start
            i = k
        return total
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        i = 12
        while i + 8 <= len(data):
            fourcc, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
            if fourcc == b"VP8 ":
                return size - 10
            i += 8 + size + (size & 1)
        raise ValueError("no lossy VP8 chunk in this WebP file")
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return _mdat_bytes(data)
    raise ValueError("not a JPEG or WebP file, nor an AVIF one")


def _mdat_bytes(data: bytes) -> int:
    """Payload bytes of the top-level ``mdat`` boxes of an ISO-BMFF (AVIF) file."""
    i, total = 0, 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        head = 8
        if size == 1:  # a 64-bit size follows the type
            size, head = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - i
        if size < head:
            raise ValueError(f"corrupt AVIF box at byte {i}")
        if kind == b"mdat":
            total += size - head
        i += size
    return total


def match_size(image, target_bytes: float, fmt: str = "jpeg", *, headerless: bool = False):
    """The ``fmt`` ("jpeg", "webp" or "avif") file of ``image`` at the quality in 1..100 that brings
    it closest to ``target_bytes``: the whole file's size, or with ``headerless`` its
    entropy-coded data's (:func:`entropy_coded_bytes`). Ties go to the lower quality. The
    lowest quality may still be larger than a tiny target; the result says what it reached.
    Returns a :class:`SizeMatch`. Binary search (size grows with quality, nearly always),
    then the neighbours: about ten encodes."""
    image = _uint8_image(image)
    cache: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in cache:
            cache[q] = encode_classic(image, fmt, q)
        return entropy_coded_bytes(cache[q]) if headerless else len(cache[q])

    lo, hi = 1, 100
    while lo < hi:  # the lowest quality whose size reaches the target
        mid = (lo + hi) // 2
        if size(mid) >= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    near = range(max(1, lo - 2), min(100, lo + 2) + 1)
    q = min(near, key=lambda q: (abs(size(q) - target_bytes), q))
    decoded = decode_classic(cache[q], grey=image.ndim == 2)
    return SizeMatch(fmt, q, cache[q], entropy_coded_bytes(cache[q]), decoded)
