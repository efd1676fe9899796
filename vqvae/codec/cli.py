"""The command line: ``python -m vqvae.codec compress IMAGE... --model NAME -o DIR`` and
``python -m vqvae.codec decompress FILE.vqz... -o DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import PIL.Image
import torch

from ..checkpoint import PRETRAINED_DIR, WEIGHTS_NAME
from ..files import atomic_write
from ..grid_prior import GRID_PRIOR_WEIGHTS, GridPrior
from ..images import load_image, load_photo, to_model_input, to_uint8
from ..model import load_pretrained
from ..prior import PRIOR_WEIGHTS, CodePrior, codebook_fingerprint, load_prior
from . import photo
from .api import cheapest_labels, compress_codes, decompress
from .format import SUFFIX, prior_fingerprint, read_header

# A thumbnail's .vqz file is a few dozen bytes, a photo's a few hundred kB at the highest
# rate; anything this big is not one, and is not read into memory to find out.
MAX_FILE_BYTES = 16 << 20
MAX_PIXELS = 16 << 20  # photos above it are downscaled to it (PIL's own limit is 16 MP too)
TILE = 512  # photos are encoded and decoded in tiles of this many pixels: bounded memory


def _pretrained_pairs(prior_file: str = PRIOR_WEIGHTS):
    """(folder) of every shipped model that has a prior (``prior_file``)."""
    roots = [PRETRAINED_DIR, Path.cwd() / "pretrained"]
    seen, out = set(), []
    for root in roots:
        for d in sorted(root.glob("*")) if root.is_dir() else []:
            if (d / WEIGHTS_NAME).is_file() and (d / prior_file).is_file():
                if d.resolve() not in seen:
                    seen.add(d.resolve())
                    out.append(d)
    return out


def _read_vqz(path: str) -> bytes:
    """A file's bytes, at most MAX_FILE_BYTES of them (a device such as /dev/zero included)."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"over {MAX_FILE_BYTES >> 20} MB: not a .vqz file")
    return data


def _owner(data: bytes, loaded: dict) -> str | None:
    """The shipped model whose VQ-VAE and prior decode ``data`` (the checksum says so)."""
    try:
        return _decode_shipped(data, loaded)[3].name
    except ValueError:
        return None


def _load_pair(model_name, prior_name):
    model = load_pretrained(model_name)
    return model, load_prior(prior_name or model_name, model=model)


def _decode_shipped(data: bytes, loaded: dict):
    """Decode a file with the shipped (model, prior) its header names: (images, labels,
    prior, folder). The 4-bit ids of version 2 can name two shipped pairs (mnist's and
    cifar10's VQ-VAE ids are equal); the checksum tells."""
    info = read_header(data)
    error = None
    for d in _pretrained_pairs():
        if d not in loaded:
            loaded[d] = _load_pair(d, None)
        model, prior = loaded[d]
        ids = info.ids_for(codebook_fingerprint(model), prior_fingerprint(prior))
        if ids != (info.vqvae_id, info.prior_id):
            continue
        try:
            return (*decompress(model, prior, data), prior, d)
        except ValueError as e:
            error = e
    if error is not None:
        raise error
    names = ", ".join(d.name for d in _pretrained_pairs()) or "none has a prior"
    raise ValueError(
        f"no shipped model with a prior matches this file ({names}): pass --model "
        "(and --prior) naming the ones it was compressed with"
    )


def _load_grid_pair(model_name, prior_name):
    return load_pretrained(model_name), GridPrior.from_pretrained(prior_name or model_name)


def _decode_photo(data: bytes, fixed, loaded: dict):
    """The image of a version 3 file: with the (model, grid prior) given, or the shipped
    pair its 12-bit ids name."""
    if fixed:
        return photo.decompress_image(*fixed, data, tile=TILE)
    hd = photo.read_photo_header(data)
    for d in _pretrained_pairs(GRID_PRIOR_WEIGHTS):
        if ("grid", d) not in loaded:
            loaded[("grid", d)] = _load_grid_pair(d, None)
        model, prior = loaded[("grid", d)]
        if (hd.vqvae_id, hd.prior_id) == photo.file_ids(model, prior):
            return photo.decompress_image(model, prior, data, tile=TILE)
    raise ValueError(
        "no shipped model with a grid prior matches this file: pass --model (and --prior) "
        "naming the ones it was compressed with"
    )


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
        files.append(photo.compress_image(model, prior, x, rate=a.rate, tile=TILE))
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
    if a.rate is not None:
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
    files = compress_codes(prior, codes, label, model=model)
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
    fixed = grid_fixed = None
    loaded: dict = {}
    results = []
    for src in a.files:
        try:
            b = _read_vqz(src)
            if b[:1] == bytes([photo.FIRST_BYTE]):
                if a.model and grid_fixed is None:
                    grid_fixed = _load_grid_pair(a.model, a.prior)
                results.append((_decode_photo(b, grid_fixed, loaded)[0], -1, None))
                continue
            if a.model and fixed is None:
                fixed = _load_pair(a.model, a.prior)
            if fixed:
                images, labels = decompress(*fixed, b)
                prior = fixed[1]
            else:
                images, labels, prior, _ = _decode_shipped(b, loaded)
        except ValueError as e:
            hint = _owner(b, loaded) if fixed and "made with another" in str(e) else None
            also = (
                f"; it decodes with the shipped model {hint!r}: pass --model {hint}" if hint else ""
            )
            raise ValueError(f"{src}: {e}{also}") from e
        results.append((images[0], int(labels[0]), prior))
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
