"""Images from the outside world in, pictures for people out.

In: :func:`load_image` opens whatever a user hands over (any PIL format, 16-bit, CMYK,
palette, alpha, animated, EXIF-rotated) as a plain 8-bit ``L`` or ``RGB`` image, refusing
corrupt files and decompression bombs with a clear :class:`ImageError`;
:func:`to_model_input` turns it into a model's (1, C, S, S) float tensor in [0, 1] at the
training size (a thumbnail: centre-cropped and shrunk); :func:`load_photo` keeps a photo at
its own resolution (downscaled only above a size cap, never cropped) for
``VQVAE.encode_image``.

Out: :func:`enlarge` (nearest-neighbour, no blur), :func:`code_map_image` (a code grid
coloured per code with its indices written in), :func:`frame_strip` and :func:`write_gif`.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw, ImageFont, ImageOps

from .data import image_transform
from .latent import color_code_map

# Pixel limits keep every accepted input within ~300 MB and ~1.5 s of decoding on 2 cores
# (issue 11): a 16 MP RGBA picture is 64 MB as 8-bit, and nothing is ever held as floats at
# full size. Larger pictures are refused from their header, before decoding, except JPEG
# photos, which decode at 1/2, 1/4 or 1/8 scale (PIL's draft mode) to within the limit.
MAX_DECODED_PIXELS = 16_000_000
# The largest picture accepted at all (a camera JPEG, decoded at reduced scale); the app
# also sets PIL's own decompression-bomb guard to it.
MAX_PIXELS = 50_000_000
# Photos run through the model at their own resolution up to this many pixels (1024 x 1024);
# larger ones are downscaled to it (BENCHMARKS.md: time and memory at the cap).
PHOTO_MAX_PIXELS = 1 << 20
_BLOCK_PIXELS = 1 << 18  # converted a block of rows at a time: float temporaries of ~8 MB


class ImageError(ValueError):
    """A file or array that cannot be used as an image; the message is meant for users."""


class ColourImageError(ImageError):
    """A colour picture given to a 1-channel (greyscale) model: callers can offer a colour
    model instead of turning the picture grey."""


def load_image(
    source, *, max_pixels: int = MAX_PIXELS, max_decoded_pixels: int = MAX_DECODED_PIXELS
) -> tuple[PIL.Image.Image, list[str]]:
    """Open ``source`` (a path, a PIL image or a numpy array (H, W[, C]) of uint8, 16-bit,
    bool or float values) as an 8-bit ``L`` or ``RGB`` PIL image, plus notes on what was
    done to it (for the user).

    EXIF orientation is applied; animated images give their first frame; 16-bit and float
    images are scaled to 8 bits (floats up to 1 are taken as [0, 1]); CMYK, palette and
    1-bit images are converted; transparent pixels are composited on black or white,
    whichever contrasts with the opaque content.

    Size limits: a file's size is read from its header before decoding. Pictures of more
    than ``max_decoded_pixels`` (16 MP) are refused, except JPEGs of up to ``max_pixels``
    (50 MP), which are decoded at 1/2, 1/4 or 1/8 scale to fit. Arrays and PIL images over
    ``max_decoded_pixels`` are refused too.
    Raises :class:`ImageError` for a missing, corrupt, non-image or too large input.
    """
    notes: list[str] = []
    if source is None or (isinstance(source, (str, Path)) and not str(source)):
        raise ImageError("No image given: upload one, pick an example or draw.")
    own = True  # may be changed in place (not the caller's PIL image)
    if isinstance(source, np.ndarray):
        im = _from_array(source, max_decoded_pixels, notes)
    elif isinstance(source, PIL.Image.Image):
        im, own = source, False
    else:
        im = _open(Path(source), max_pixels, max_decoded_pixels, notes)
    _check_size(im.width, im.height, max_decoded_pixels)
    # is_animated reads at most two frames; n_frames would walk them all (a GIF of 200k
    # 1x1 frames takes seconds).
    if getattr(im, "is_animated", False):
        im.seek(0)
        notes.append("animated image: used its first frame")
    try:
        if own:
            ImageOps.exif_transpose(im, in_place=True)  # no full-size copy
        else:
            im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block is not worth refusing the picture for
        notes.append("ignored unreadable EXIF orientation")
    return _to_8bit(im, notes), notes


def _check_size(w: int, h: int, limit: int, what: str = "") -> None:
    if w * h > limit:
        raise ImageError(
            f"The image is {w}x{h} pixels; the limit is {limit / 1e6:.0f} megapixels{what}."
        )
    if w < 1 or h < 1:
        raise ImageError("The image is empty (0 pixels).")


def _open(path: Path, max_pixels: int, max_decoded: int, notes: list[str]) -> PIL.Image.Image:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else None
        name = path.name or str(path)
        raise ImageError(
            f"Not an image file: {name} is {what}" if what else f"No such file: {name}"
        )
    if path.stat().st_size == 0:
        raise ImageError(f"{path.name} is an empty file.")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            im = PIL.Image.open(path)  # reads the header only
            w, h = im.size
            if w * h > max_decoded:
                if w * h <= max_pixels:
                    # JPEG decodes at 1/2, 1/4 or 1/8 scale (to ceil(w / s) x ceil(h / s));
                    # other formats ignore draft() and are refused below.
                    fits = [s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= max_decoded]
                    s = fits[0] if fits else 8
                    im.draft(im.mode, (max(1, w // s), max(1, h // s)))
                if im.width * im.height > max_decoded:
                    _check_size(w, h, max_decoded, f" ({max_pixels / 1e6:.0f} for JPEG photos)")
                notes.append(f"large photo ({w}x{h}) decoded at {im.width}x{im.height}")
            im.load()
    except ImageError:
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as e:
        raise ImageError(
            f"{path.name} is too large to open safely (over "
            f"{PIL.Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)."
        ) from e
    except PIL.UnidentifiedImageError as e:
        raise ImageError(
            f"{path.name} is not an image this app can read (PNG, JPEG, GIF, WebP, BMP, TIFF...)."
        ) from e
    except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, zlib errors...
        raise ImageError(
            f"{path.name} is corrupt or truncated and cannot be decoded ({type(e).__name__}: {e})."
        ) from e
    return im


def _from_array(a: np.ndarray, max_decoded: int, notes: list[str]) -> PIL.Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ImageError(f"An image array must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}.")
    _check_size(a.shape[1], a.shape[0], max_decoded)
    if a.dtype != np.uint8:
        if a.dtype.kind not in "buif":
            raise ImageError(f"An image array must hold numbers, got dtype {a.dtype}.")
        src = a

        def rows(r0, r1):
            return src[r0:r1]

        if a.dtype.kind == "f":
            hi = _float_max(rows, a.shape[0], a.shape[1], finite=True)
        else:
            hi = float(a.max(initial=0))
        a = _to_uint8(rows, a.shape, hi, unit=hi <= 1.0)  # [0, 1] floats, or a 0/1 mask
        if hi > 255:
            notes.append(f"{src.dtype} image scaled to 8 bits")
    return PIL.Image.fromarray(a)


def _row_blocks(h: int, w: int):
    step = max(1, _BLOCK_PIXELS // max(1, w))
    for r0 in range(0, h, step):
        yield r0, min(h, r0 + step)


def _float_max(rows, h: int, w: int, *, finite: bool) -> float:
    """Largest value of rows(r0, r1) over all row blocks, at least 0, without a full-size
    copy; non-finite values are ignored, or an ImageError if ``finite``."""
    hi = 0.0
    for r0, r1 in _row_blocks(h, w):
        b = rows(r0, r1)
        ok = np.isfinite(b)
        if not ok.all():
            if finite:
                raise ImageError("The image array contains NaN or infinite values.")
            b = b[ok]
        hi = max(hi, float(b.max(initial=0)))
    return hi


def _to_uint8(rows, shape: tuple, hi: float, *, unit: bool) -> np.ndarray:
    """uint8 array of ``shape`` from values read a block of rows at a time (rows(r0, r1)):
    times 255 if ``unit`` (values in [0, 1]); else divided down to 8 bits if their maximum
    ``hi`` is over 255 (16-bit: 65535 -> 255; larger ranges: hi -> 255); then clipped to
    [0, 255] and rounded, NaN -> 0."""
    div = 257.0 if hi <= 65535 else hi / 255.0
    out = np.empty(shape, np.uint8)
    for r0, r1 in _row_blocks(shape[0], shape[1]):
        v = rows(r0, r1)
        b = np.array(v, np.float64)  # a copy: changed in place below
        if unit:
            b *= 255.0
        elif hi > 255:
            b /= div
        if v.dtype.kind == "f":
            np.copyto(b, 0.0, where=np.isnan(b))  # +-inf: clipped below
        np.clip(b, 0, 255, out=b)
        out[r0:r1] = np.rint(b, out=b)
    return out


def _to_8bit(im: PIL.Image.Image, notes: list[str]) -> PIL.Image.Image:
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        w, h = im.size

        def rows(r0, r1):  # a PIL crop: no full-size numpy copy
            return np.asarray(im.crop((0, r0, w, r1)))

        # integer modes: PIL's extrema need no copy; floats may hold NaN or inf
        hi = _float_max(rows, h, w, finite=False) if mode == "F" else float(im.getextrema()[1])
        if hi > 255:
            notes.append(f"{mode} image scaled to 8 bits")
        return PIL.Image.fromarray(_to_uint8(rows, (h, w), hi, unit=mode == "F" and hi <= 1.0))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("RGBA", "LA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...
    if im.mode in ("RGBA", "LA"):
        im = _flatten_alpha(im, notes)
    return im


def _flatten_alpha(im: PIL.Image.Image, notes: list[str]) -> PIL.Image.Image:
    """Composite on black or white: whichever contrasts with the opaque pixels, so a light
    drawing on a transparent background stays visible, and so does a dark one. Works a
    block of rows at a time: no full-size RGBA or float copy."""
    mode = "RGB" if im.mode == "RGBA" else "L"
    if im.getchannel(im.mode[-1]).getextrema()[0] >= 255:  # fully opaque
        return im.convert(mode)
    w, h = im.size
    coef = np.array([0.299, 0.587, 0.114], np.float32)
    lit = weight = 0.0
    for r0, r1 in _row_blocks(h, w):
        a = np.asarray(im.crop((0, r0, w, r1)).convert("RGBA"), np.float32)
        alpha = a[..., 3] / 255.0
        lit += float(((a[..., :3] @ coef) * alpha).sum(dtype=np.float64))
        weight += float(alpha.sum(dtype=np.float64))
    bright = lit / weight > 127.5 if weight > 0 else False
    bg = (0, 0, 0, 255) if bright else (255, 255, 255, 255)
    notes.append(f"transparent pixels composited on {'black' if bright else 'white'}")
    out = PIL.Image.new(mode, im.size)
    back = PIL.Image.new("RGBA", (w, next(_row_blocks(h, w))[1]), bg)
    for r0, r1 in _row_blocks(h, w):
        tile = im.crop((0, r0, w, r1)).convert("RGBA")
        under = back if back.height == r1 - r0 else back.crop((0, 0, w, r1 - r0))
        out.paste(PIL.Image.alpha_composite(under, tile).convert(mode), (0, r0))
    return out


def to_model_input(
    im: PIL.Image.Image, channels: int, image_size: int, *, invert: bool | None = None
) -> tuple[torch.Tensor, bool]:
    """A (1, C, S, S) float tensor in [0, 1] from an image opened by :func:`load_image`:
    centre-cropped to a square, resized (vqvae.data.image_transform), converted to
    ``channels``. For 1-channel models, ``invert=None`` inverts dark-on-light pictures (mean
    border brightness above one half) to light-on-dark, as in MNIST. Returns the tensor and
    whether it was inverted."""
    w, h = im.size
    side = min(w, h)
    # crop first, so a 1 x 40000 strip never becomes a 28 x 1120000 tensor
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    if side > 4 * image_size:  # box-filter most of the way down (cropping as it reduces)
        im = im.reduce(side // (2 * image_size), box=box)
    elif w != h:
        im = im.crop(box)
    x = image_transform(channels, image_size)(im).float().div(255.0)[None]
    if invert is None:
        invert = channels == 1 and _border_mean(x) > 0.5
    if invert:
        x = 1.0 - x
    return x, bool(invert)


def load_photo(
    source, *, channels: int = 3, max_pixels: int = PHOTO_MAX_PIXELS
) -> tuple[torch.Tensor, list[str]]:
    """A photo at its own resolution: (image (1, C, H, W) float in [0, 1], notes for the
    user), for ``VQVAE.encode_image``. ``source``: anything :func:`load_image` opens.

    Never cropped: above ``max_pixels`` it is downscaled (Lanczos, aspect kept) to the
    largest size within the cap, and a note says so. For ``channels=1`` a colour picture
    raises :class:`ColourImageError` (a greyscale model would turn it into grey mush; see
    :func:`is_colour`); a grey one is used as it is, never inverted."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    im, notes = load_image(source)
    if channels == 1 and is_colour(im):
        raise ColourImageError(
            "This is a colour photo and this model reads greyscale digits or clothes: "
            "use a colour model (cifar10) for photos."
        )
    w, h = im.size
    if w * h > max_pixels:
        s = (max_pixels / (w * h)) ** 0.5
        size = (max(1, int(w * s)), max(1, int(h * s)))
        im = im.resize(size, PIL.Image.LANCZOS, reducing_gap=3.0)
        cap = f"the {max_pixels:,} pixel cap"
        notes.append(f"downscaled from {w}x{h} to {size[0]}x{size[1]} ({cap})")
    im = im.convert("L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.asarray(im).copy()).float().div_(255.0)
    return (x[None, None] if channels == 1 else x.permute(2, 0, 1)[None]), notes


def cover(x: torch.Tensor, size) -> torch.Tensor:
    """Images ``x`` (B, C, h, w) in [0, 1] fitted to ``size`` (H, W): resized (bilinear,
    antialiased, aspect kept) to the smallest size that covers H x W, then centre-cropped
    to it; what sticks out of the other image's shape is cut off, nothing is stretched."""
    from torchvision.transforms.v2 import functional as TF

    H, W = (int(v) for v in size)
    h, w = x.shape[-2:]
    s = max(H / h, W / w)
    grown = (max(H, math.ceil(h * s - 1e-6)), max(W, math.ceil(w * s - 1e-6)))
    if grown != (h, w):
        x = TF.resize(x, list(grown), antialias=True).clamp(0.0, 1.0)
    return TF.center_crop(x, [H, W])


def is_colour(im: PIL.Image.Image, *, spread: int = 24, share: float = 0.01) -> bool:
    """Whether an 8-bit image (as from :func:`load_image`) has colour: more than ``share``
    of its pixels have channels ``spread`` or more apart (of 255), judged on a copy of at
    most 256 x 256. A grey picture saved as RGB (JPEG noise included) is not colour."""
    if im.mode != "RGB":
        return False
    small = im.copy()
    small.thumbnail((256, 256))
    a = np.asarray(small, np.int16)
    return bool(((a.max(2) - a.min(2)) >= spread).mean() > share)


def _border_mean(x: torch.Tensor) -> float:
    b = torch.cat(
        [
            x[..., 0, :].flatten(),
            x[..., -1, :].flatten(),
            x[..., :, 0].flatten(),
            x[..., :, -1].flatten(),
        ]
    )
    return float(b.mean())


# -- pictures for people -------------------------------------------------------------------


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) float in [0, 1] -> uint8 (H, W[, 3]) / (B, H, W[, 3])."""
    a = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
    a = a.movedim(-3, -1).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def enlarge(x, size: int = 256) -> PIL.Image.Image:
    """Nearest-neighbour enlargement by the largest integer factor that keeps the longer side
    within ``size`` (at least 1), so every pixel stays a crisp square. ``x``: a (C, H, W)
    float tensor in [0, 1], a uint8 array (H, W[, 3]) or a PIL image."""
    if torch.is_tensor(x):
        x = to_uint8(x)
    im = x if isinstance(x, PIL.Image.Image) else PIL.Image.fromarray(x)
    k = max(1, size // max(im.size))
    return im.resize((im.width * k, im.height * k), PIL.Image.NEAREST)


def code_map_image(
    codes, codebook_size: int, size: int = 256, *, numbers: bool = True
) -> PIL.Image.Image:
    """A code grid (h, w) drawn as coloured cells (vqvae.color_code_map), each an integer
    ``size // max(h, w)`` pixels wide, with thin grid lines and each cell's index written
    in black or white, whichever reads better on its colour."""
    codes = torch.as_tensor(np.asarray(codes)).long()
    h, w = codes.shape
    cell = code_map_cell_size((h, w), size)
    rgb = color_code_map(codes, codebook_size).numpy()
    im = enlarge(rgb, cell * max(h, w))
    labels = [[str(int(c)) for c in row] for row in codes.tolist()]
    draw_cells(
        im, rgb, cell, labels if numbers and cell >= 14 else None, max(8, min(cell // 3, 16))
    )
    return im


MIN_LINED_CELL = 8  # px: smaller code map cells are drawn without lines between them


def draw_cells(im, rgb, cell: int, labels=None, font_size: int = 16) -> None:
    """Draw on ``im`` (PIL RGB, a grid of (h, w) cells ``cell`` pixels wide, coloured
    ``rgb`` uint8 (h, w, 3)) thin white lines between the cells and, if ``labels`` (h rows
    of w strings) is given, each label at its cell's centre in black or white, whichever
    reads better on the cell's colour. The code map and the surprise map both use it. Cells
    under ``MIN_LINED_CELL`` pixels (a photo's code map) get no lines: there a line would take
    a quarter of each cell and wash the colours out."""
    h, w = rgb.shape[:2]
    draw = ImageDraw.Draw(im)
    for i in range(1, h) if cell >= MIN_LINED_CELL else ():
        draw.line([(0, i * cell), (im.width, i * cell)], fill=(255, 255, 255), width=1)
    for j in range(1, w) if cell >= MIN_LINED_CELL else ():
        draw.line([(j * cell, 0), (j * cell, im.height)], fill=(255, 255, 255), width=1)
    if labels is None:
        return
    # Each label is rendered once (cached across calls) and pasted through its mask: the
    # same pixels as draw.text at the cell's centre, ~10x faster than 64 draw.text calls.
    r, g, b = rgb.astype(np.float64).transpose(2, 0, 1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    for i in range(h):
        for j in range(w):
            ink = (0, 0, 0) if luma[i, j] > 140 else (255, 255, 255)
            mask, (x, y) = _label_mask(labels[i][j], cell, font_size)
            im.paste(ink, ((j - 1) * cell + x, i * cell + y), mask)


@functools.lru_cache(maxsize=4096)
def _label_mask(text: str, cell: int, font_size: int) -> tuple[PIL.Image.Image, tuple]:
    """``text`` as an ``L`` mask, and its offset from the top-left corner of a canvas 3
    cells wide (long labels may overflow their cell) and 1 tall, on which it is drawn
    centred at (1.5, 0.5) cells: the same sub-pixel offset as at any cell's centre."""
    mask = PIL.Image.new("L", (3 * cell, cell), 0)
    ImageDraw.Draw(mask).text(
        (1.5 * cell, 0.5 * cell), text, fill=255, font=_font(font_size), anchor="mm"
    )
    box = mask.getbbox() or (0, 0, 1, 1)
    return mask.crop(box), box[:2]


@functools.lru_cache(maxsize=32)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def frame_strip(
    frames: torch.Tensor, *, scale: int = 2, per_row: int = 12, pad: int = 2
) -> PIL.Image.Image:
    """Frames (N, C, H, W) in [0, 1] side by side (``per_row`` a row, white gaps),
    enlarged ``scale`` times without blur."""
    from torchvision.utils import make_grid

    grid = make_grid(
        frames.float().cpu(), nrow=min(per_row, len(frames)), padding=pad, pad_value=1.0
    )
    im = PIL.Image.fromarray(to_uint8(grid))
    return im.resize((im.width * scale, im.height * scale), PIL.Image.NEAREST)


def write_gif(
    frames: torch.Tensor, path, *, fps: float = 12.0, pingpong: bool = False, size: int = 224
) -> Path:
    """Write frames (N, C, H, W) in [0, 1] as a looping animated GIF at ``path``, enlarged
    (nearest) towards ``size`` pixels; ``pingpong`` plays them forwards then backwards.

    One palette for all frames (median cut over the small frames, before enlarging): no
    colour flicker between frames, and ~30x faster than letting the GIF writer quantize
    every enlarged frame (imageio.v3.imwrite does that: ~370 ms for 46 RGB frames on 2
    cores, against ~15 ms here)."""
    if pingpong and len(frames) > 2:
        frames = torch.cat([frames, frames.flip(0)[1:-1]])
    a = to_uint8(frames)
    n, h, w = a.shape[:3]
    k = max(1, size // max(h, w))
    tall = PIL.Image.fromarray(a.reshape(n * h, w, *a.shape[3:]))
    if tall.mode == "RGB":
        tall = tall.quantize(256, method=PIL.Image.Quantize.MEDIANCUT, dither=PIL.Image.Dither.NONE)
    palette = tall.getpalette() if tall.mode == "P" else None
    idx = np.asarray(tall).reshape(n, h, w).repeat(k, axis=1).repeat(k, axis=2)
    ims = [PIL.Image.fromarray(f, tall.mode) for f in idx]
    if palette is not None:
        for im in ims:
            im.putpalette(palette)
    ims[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=round(1000.0 / fps),
        loop=0,
    )
    return Path(path)


def code_map_cell_size(grid_shape, size: int = 256) -> int:
    """Side in pixels of one cell of a :func:`code_map_image` of a grid ``grid_shape``
    (h, w) drawn at ``size``: the image is ``w * cell`` wide and ``h * cell`` tall."""
    h, w = grid_shape
    return max(1, size // max(h, w))


def code_map_cell(xy, grid_shape, size: int = 256) -> tuple[int, int]:
    """The cell (row, column) under pixel ``xy`` = (x, y) of a :func:`code_map_image` of a
    grid ``grid_shape`` (h, w) drawn at ``size`` (x to the right, y down, from the top-left
    corner). Raises ValueError unless ``xy`` is two finite numbers inside the image."""
    h, w = grid_shape
    cell = code_map_cell_size(grid_shape, size)
    try:
        x, y = (float(v) for v in xy)
    except (TypeError, ValueError):
        raise ValueError(f"a pixel position is two numbers (x, y), got {xy!r}") from None
    if not (0 <= x < w * cell and 0 <= y < h * cell):  # False for NaN and inf too
        raise ValueError(f"pixel ({x:g}, {y:g}) is outside the {w * cell}x{h * cell} code map")
    return int(y // cell), int(x // cell)
