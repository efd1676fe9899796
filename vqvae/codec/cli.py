"""The command line: ``python -m vqvae.codec compress IMAGE... --model NAME -o DIR`` and
``python -m vqvae.codec decompress FILE.vqz... -o DIR``."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import PIL.Image
import torch

from ..files import atomic_write
from ..grid_prior import GridPrior
from ..images import load_image, load_photo, to_model_input, to_uint8
from ..model import load_pretrained
from ..prior import CodePrior, load_prior
from . import owners, photo
from .api import cheapest_labels, compress_codes, decompress
from .format import SUFFIX, ForeignFileError, read_header
from .rdo import RDO_WEIGHT
from .refine import REFINE_STEPS

# A thumbnail's .vqz file is a few dozen bytes, a photo's a few hundred kB at the highest
# rate; anything this big is not one, and is not read into memory to find out.
MAX_FILE_BYTES = 16 << 20
MAX_PIXELS = 16 << 20  # photos above it are downscaled to it (PIL's own limit is 16 MP too)
TILE = 512  # photos are encoded and decoded in tiles of this many pixels: bounded memory


def _read_vqz(path: str) -> bytes:
    """A file's bytes, at most MAX_FILE_BYTES of them (a device such as /dev/zero included)."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"over {MAX_FILE_BYTES >> 20} MB: not a .vqz file")
    return data


def _load_pair(model_name, prior_name):
    model = load_pretrained(model_name)
    return model, load_prior(prior_name or model_name, model=model)


def _load_grid_pair(model_name, prior_name):
    return load_pretrained(model_name), GridPrior.from_pretrained(prior_name or model_name)


def _decode_shipped(data: bytes, grid: bool, candidates: list):
    """Decode a file with the shipped pair that made it (:func:`owners.identify`: its ids,
    and where version 2's 4-bit ids name several, its checksum): (image (C, H, W), label,
    prior, or None for a photo)."""
    (photo.read_photo_header if grid else read_header)(data)  # what is no .vqz file says so
    who = owners.identify(data, candidates)
    if who.owner is None:
        kind = "a grid prior" if grid else "a prior"
        if who.refused:
            raise ValueError(
                "corrupted or truncated .vqz file: its checksum matches none of the shipped "
                f"models its ids name ({', '.join(who.refused)})"
            )
        advice = "pass --model (and --prior) naming the ones it was compressed with"
        raise ValueError(f"no shipped model with {kind} matches this file: {who.note('', advice)}")
    return _decode_with(data, grid, who.owner.pair())


def _decode_with(data: bytes, grid: bool, pair):
    if grid:
        return photo.decompress_image(*pair, data, tile=TILE)[0], -1, None
    images, labels = decompress(*pair, data)
    return images[0], int(labels[0]), pair[1]


def _compress_photos(a) -> None:
    """--rate: each image at its own size (format 3), under the model's grid prior."""
    model, prior = _load_grid_pair(a.model, a.prior)
    options = photo.rates(model)
    if not -len(options) <= a.rate < len(options):
        listed = "; ".join(f"{i}: {r.name}" for i, r in enumerate(options))
        raise ValueError(f"--rate must be one of this model's rates ({listed}), got {a.rate}")
    out_dir = Path(a.out)
    paths = _outputs(a.images, out_dir, SUFFIX)
    files = []
    for src in a.images:
        x, notes = load_photo(src, channels=model.config.in_channels, max_pixels=MAX_PIXELS)
        for note in notes:
            print(f"{src}: {note}")
        files.append(photo.compress_image(model, prior, x, rate=a.rate, tile=TILE, rdo=a.rdo,
                                          refine=a.refine))  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, path, b in zip(a.images, paths, files, strict=True):
        with atomic_write(path) as f:
            f.write(b)
        hd = photo.read_photo_header(b)
        bpp = 8 * len(b) / (hd.height * hd.width)
        print(f"{src} -> {path}: {hd.width}x{hd.height}, {hd.rate.name}, {len(b)} bytes "
              f"({bpp:.3f} bits per pixel)")  # fmt: skip


def _parse_label(prior: CodePrior, text):
    if text is None or text == "auto":
        return "auto"
    if text == "none":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    names = prior.config.class_names
    if text in names:
        return names.index(text)
    raise ValueError(
        f"unknown class {text!r}: give an index or one of {', '.join(names) or '(none)'}"
    )


def _outputs(inputs: list[str], out_dir: Path, suffix: str) -> list[Path]:
    paths = [out_dir / (Path(p).stem + suffix) for p in inputs]
    if len(set(paths)) != len(paths):
        raise ValueError("two inputs have the same file name stem; their outputs would clash")
    return paths


def _compress_cli(a) -> None:
    if a.rdo and a.rate is None:
        raise ValueError("--rdo chooses a photo's codes: use it with --rate")
    if not a.rdo >= 0:
        raise ValueError(f"--rdo must be >= 0, got {a.rdo}")
    if a.refine and a.rate is None:
        raise ValueError("--refine chooses a photo's codes: use it with --rate")
    if a.refine < 0:
        raise ValueError(f"--refine must be >= 0, got {a.refine}")
    if a.rate is not None:
        if a.one_pass:
            raise ValueError(
                "--one-pass is for thumbnails: a photo's encoder (--rate) already counts "
                "every pass of its grid prior in one batched run"
            )
        return _compress_photos(a)
    model, prior = _load_pair(a.model, a.prior)
    label = _parse_label(prior, a.label)
    c = model.config
    x = torch.cat([to_model_input(load_image(p)[0], c.in_channels, c.image_size)[0]
                   for p in a.images])  # fmt: skip
    out_dir = Path(a.out)
    paths = _outputs(a.images, out_dir, SUFFIX)
    codes = model.encode(x)
    if label == "auto":
        label = cheapest_labels(prior, codes)
    files = compress_codes(prior, codes, label, model=model, one_pass=a.one_pass)
    nll = prior.nll_bits(codes, label).tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = prior.config.uniform_bits / 8
    for src, path, b, bits in zip(a.images, paths, files, nll, strict=True):
        with atomic_write(path) as f:
            f.write(b)
        info = read_header(b)
        print(
            f"{src} -> {path}: {len(b)} bytes ({info.header_bytes} header + "
            f"{info.payload_bytes} payload); prior NLL {bits:.1f} bits = {bits / 8:.1f} "
            f"bytes; plain codes {plain:.1f} bytes"
        )


def _decompress_cli(a) -> None:
    out_dir = Path(a.out)
    paths = _outputs(a.files, out_dir, ".png")
    fixed: dict = {}  # grid -> the pair --model names
    candidates = functools.cache(owners.shipped)  # per kind, found and loaded once a command
    results = []
    for src in a.files:
        b = b""
        try:
            b = _read_vqz(src)
            grid = photo.is_photo_file(b)
            if not a.model:
                results.append(_decode_shipped(b, grid, candidates(grid)))
                continue
            if grid not in fixed:
                fixed[grid] = (_load_grid_pair if grid else _load_pair)(a.model, a.prior)
            results.append(_decode_with(b, grid, fixed[grid]))
        except ForeignFileError as e:
            who = owners.identify(b, candidates(grid), exclude=e.tried)
            raise ValueError(f"{src}: {e.reason}; {who.note('pass --model {name}')}") from e
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, path, (image, label, prior) in zip(a.files, paths, results, strict=True):
        with atomic_write(path) as f:
            PIL.Image.fromarray(to_uint8(image)).save(f, format="PNG")
        cls = "" if label < 0 else f" (class {prior.config.class_name(label)})"
        print(f"{src} -> {path}{cls}" + (f" ({image.shape[2]}x{image.shape[1]})" if prior is None
                                         else ""))  # fmt: skip


def main(argv=None) -> None:
    """``python -m vqvae.codec compress IMAGE... --model NAME -o DIR`` and
    ``python -m vqvae.codec decompress FILE.vqz... -o DIR``."""
    p = argparse.ArgumentParser(
        prog="python -m vqvae.codec",
        description="Compress images to .vqz files with a VQ-VAE and its prior, and back.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="images -> DIR/<name>.vqz")
    c.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    c.add_argument("--model", required=True, help="VQ-VAE name (pretrained/<name>) or folder")
    c.add_argument("--prior", help="prior name or folder (default: the model's)")
    c.add_argument(
        "--label",
        help="class index or name for every image, 'none', or 'auto' (default): per image "
        "the class that makes its file smallest",
    )
    c.add_argument(
        "--rate",
        type=int,
        help="code each image at its own size (a photo) at this rate of the model: an index, "
        "0 = the lowest (needs the model's grid prior); without it, images become the "
        "model's thumbnails",
    )
    c.add_argument(
        "--rdo",
        type=float,
        default=0.0,
        help="with --rate: choose each code for its error plus RDO x its bits (a smaller file "
        "for a little more error, compressing about 1.4 times as long; "
        f"{RDO_WEIGHT:g} was chosen on held-out photos; default 0: the nearest codes)",
    )
    c.add_argument(
        "--refine",
        type=int,
        default=0,
        help="with --rate: refine each photo's latents for REFINE steps before choosing its "
        "codes, so that they decode closer to it (each step about a decoder pass forward and "
        f"back: seconds for a megapixel; {REFINE_STEPS} was chosen on held-out photos; "
        "default 0)",
    )
    c.add_argument(
        "--one-pass",
        action="store_true",
        help="thumbnails: count every code from one run of the prior (a version 5 file: "
        "compressing is ~10x faster, decompressing ~4x slower)",
    )
    c.add_argument("-o", "--out", required=True, help="output folder")
    d = sub.add_parser("decompress", help=".vqz files -> DIR/<name>.png")
    d.add_argument("files", nargs="+", help=".vqz files")
    d.add_argument(
        "--model", help="VQ-VAE name or folder (default: the shipped model the file names)"
    )
    d.add_argument("--prior", help="prior name or folder (default: the model's)")
    d.add_argument("-o", "--out", required=True, help="output folder")
    a = p.parse_args(argv)
    try:
        (_compress_cli if a.command == "compress" else _decompress_cli)(a)
    except (OSError, ValueError, TypeError) as e:  # as argparse answers a bad command line
        why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else e
        print(f"error: {why}", file=sys.stderr)
        sys.exit(2)
