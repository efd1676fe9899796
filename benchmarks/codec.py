"""The .vqz codec's figures: file sizes against the plain code bits and the prior's NLL, the
VQ-VAE's quality next to JPEG's and WebP's at the same size, and coding speed.

    python -m benchmarks.codec --data-dir ../shared/data                 # all three models
    python -m benchmarks.codec --dataset mnist --data-dir ../shared/data --limit 200
    python -m benchmarks.codec --dataset mnist --prior runs/prior-mnist  # a prior run folder

Each model needs its prior: ``pretrained/<name>/prior.*`` (``python -m train.prior`` and its
``export``), or ``--prior DIR``. A model without one is reported and skipped.

Per test image (``--limit`` of them evenly spread over the split, in its order, since a split
may be sorted by class; 0 = all):

- ``.vqz``: bytes of the file from :func:`vqvae.codec.compress`, with and without its
  header, against the plain code bits h*w*log2(K)/8 and the information the coder is
  given: the prior's NLL of the codes under the class coded plus that class's
  log2(classes + 1) bits. The class coded (``--labels``): ``auto`` (default, what a user
  gets) the cheapest per image (:func:`vqvae.codec.cheapest_labels`; how often it is the
  true class is reported), ``true`` the test label, ``none`` no class. Every file is
  decoded again and must give the VQ-VAE's reconstruction and the class exactly.
- JPEG (PIL/libjpeg, optimized Huffman tables) and WebP (PIL/libwebp, lossy, method 6) of
  the same uint8 image at the quality in 1..100 that brings the file closest to the .vqz
  size (:func:`vqvae.compare.match_size`), matched twice:
  * full files: the whole JPEG / WebP file against the whole .vqz file;
  * header-less: each format's entropy-coded data against the .vqz payload. For JPEG that
    is the scan data (the bytes after each SOS segment's header up to the next marker; the
    quantization and Huffman tables, frame header and JFIF segment are header), measured by
    walking the file's markers. For WebP it is the VP8 chunk's data minus its 10-byte frame
    header (the 12-byte RIFF header and the 8-byte chunk header are header too); see
    :func:`vqvae.compare.entropy_coded_bytes`.
  At these sizes a JPEG's header alone is often larger than a whole .vqz file: the lowest
  quality may still miss the target, so the sizes actually reached are reported beside it.
- PSNR (and SSIM) of each against the original image, mean over images.
- Milliseconds per image to compress and to decompress (the codec runs the prior on one
  thread, one image at a time; the time includes the VQ-VAE's encoder or decoder).
  ``--one-pass``: version 5 files, whose encoder runs the prior once per image
  (:func:`vqvae.codec.coder.full_counts`) and whose decoder runs it once per cell.

Numbers on CIFAR-10 are on its JPEG q75 copy (../shared/data), as the data source says.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import vqvae
from vqvae.codec import class_bits, compress, decompress, read_header
from vqvae.compare import FORMATS, match_size
from vqvae.data import DatasetNotFoundError, load_labels, load_uint8, spread
from vqvae.files import write_json_atomic
from vqvae.images import to_uint8
from vqvae.prior import PRIOR_WEIGHTS, load_prior

DATASETS = ("mnist", "fashion-mnist", "cifar10")


# ----------------------------------------------------------------------------- the figures
def to_float(images_u8) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, 3) as float (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.stack(images_u8)).float() / 255.0
    return t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2)


def measure(
    model, prior, images_u8: torch.Tensor, labels=None, truth=None, one_pass: bool = False
) -> dict:
    """Every figure for uint8 images (N, C, H, W) (see the module docstring): ``labels`` as
    :func:`vqvae.codec.compress` takes them (None, "auto" or a tensor); ``truth``, the true
    classes if known, for how often "auto" picks them."""
    x = images_u8.float() / 255.0
    n = len(x)
    t0 = time.perf_counter()
    files = compress(model, prior, x, labels, one_pass=one_pass)
    t1 = time.perf_counter()
    decoded, got_labels = decompress(model, prior, files)
    t2 = time.perf_counter()
    codes = model.encode(x)
    recon = model.decode(codes)
    exact = int(sum(torch.equal(a, b) for a, b in zip(decoded, recon, strict=True)))
    if torch.is_tensor(labels) and not torch.equal(got_labels, labels):
        raise AssertionError("the labels did not round-trip")
    # what the coder is given: the codes under the class coded, and that class
    bits_of_class = class_bits(prior)
    with torch.inference_mode():
        codes_nll = prior.nll_bits(codes, got_labels if prior.num_classes else None).double()
    nll = codes_nll + bits_of_class
    auto = isinstance(labels, str) and labels == "auto"
    picked = (got_labels == truth).double().mean().item() if auto and truth is not None else None
    infos = [read_header(f) for f in files]
    sizes = torch.tensor([i.total_bytes for i in infos], dtype=torch.float64)
    payload = torch.tensor([i.payload_bytes for i in infos], dtype=torch.float64)
    header = sizes - payload

    originals = [to_uint8(im) for im in x]
    result = {
        "images": n,
        "exact_round_trips": exact,
        "vqz_bytes": sizes.mean().item(),
        "vqz_payload_bytes": payload.mean().item(),
        "vqz_header_bytes": header.mean().item(),
        "plain_code_bytes": prior.config.uniform_bits / 8,
        "nll_bytes": (nll / 8).mean().item(),
        "class_bits": bits_of_class,
        "labels_coded": "none" if labels is None else labels if isinstance(labels, str) else "true",
        "classes_picked_right": picked,
        "payload_over_nll": (8 * payload.sum() / nll.sum()).item(),
        "file_over_plain": (sizes.mean() / (prior.config.uniform_bits / 8)).item(),
        "vqvae_psnr": vqvae.psnr(recon, x).mean().item(),
        "vqvae_ssim": vqvae.ssim(recon, x).mean().item(),
        "one_pass": one_pass,
        "compress_ms": 1000 * (t1 - t0) / n,
        "decompress_ms": 1000 * (t2 - t1) / n,
    }
    for fmt in FORMATS:
        for key, targets in (("file", sizes), ("payload", payload)):
            ms = [match_size(im, t, fmt, headerless=key == "payload")
                  for im, t in zip(originals, targets.tolist(), strict=True)]  # fmt: skip
            y = to_float([m.image for m in ms])
            result[f"{fmt}_{key}"] = {
                "quality": float(np.mean([m.quality for m in ms])),
                "file_bytes": float(np.mean([m.file_bytes for m in ms])),
                "payload_bytes": float(np.mean([m.data_bytes for m in ms])),
                "psnr": vqvae.psnr(y, x).mean().item(),
                "ssim": vqvae.ssim(y, x).mean().item(),
            }
    return result


def table(name: str, source: str, r: dict) -> str:
    """The figures of one model as a markdown table."""
    rows = [
        (".vqz file, bytes per image (mean)", f"{r['vqz_bytes']:.1f}"),
        ("  header / payload", f"{r['vqz_header_bytes']:.1f} / {r['vqz_payload_bytes']:.1f}"),
        ("  plain codes h*w*log2 K / 8", f"{r['plain_code_bytes']:.1f}"),
        (
            f"  prior NLL / 8, with the class's {r['class_bits']:.2f} bits "
            f"(class coded: {r['labels_coded']})",
            f"{r['nll_bytes']:.1f}",
        ),
        ("  payload / NLL (goal <= 1.01 + a byte)", f"{r['payload_over_nll']:.3f}"),
        ("  file / plain codes (goal on MNIST < 0.5)", f"{r['file_over_plain']:.3f}"),
        ("  exact round trips", f"{r['exact_round_trips']}/{r['images']}"),
    ]
    if r.get("classes_picked_right") is not None:
        rows.append(("  cheapest class = true class", f"{100 * r['classes_picked_right']:.1f} %"))
    rows += [
        ("VQ-VAE PSNR / SSIM", f"{r['vqvae_psnr']:.2f} dB / {r['vqvae_ssim']:.4f}"),
    ]
    for fmt in FORMATS:
        for key, what in (("file", "full file"), ("payload", "header-less")):
            m = r[f"{fmt}_{key}"]
            rows.append((
                f"{fmt.upper()} matched to the {what} size (q {m['quality']:.0f}: "
                f"{m['file_bytes']:.0f} B file, {m['payload_bytes']:.0f} B data)",
                f"{m['psnr']:.2f} dB / {m['ssim']:.4f}",
            ))  # fmt: skip
    rows += [
        (
            "compress, ms per image" + (" (one pass)" if r.get("one_pass") else ""),
            f"{r['compress_ms']:.0f}",
        ),  # fmt: skip
        ("decompress, ms per image", f"{r['decompress_ms']:.0f}"),
    ]
    lines = [f"### {name} ({source}, test split, {r['images']} images)", "",
             "| figure | value |", "|---|---|"]  # fmt: skip
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])


def run(model_name, prior_name, dataset, data_dir, limit: int, labels: str = "auto",
        one_pass: bool = False) -> dict:  # fmt: skip
    """Load the model, its prior and the test split, and :func:`measure`."""
    model = vqvae.load_pretrained(model_name)
    try:
        prior = load_prior(prior_name or model_name, model=model)
    except FileNotFoundError as e:
        if prior_name:
            raise
        raise FileNotFoundError(
            f"the model {model_name!r} has no prior to compress with ({PRIOR_WEIGHTS} in "
            f"its folder). Train one (python -m train.prior --vqvae {model_name}) and export "
            f"it, or pass --prior DIR (a prior run folder)."
        ) from e
    c = model.config
    images, info = load_uint8(dataset, data_dir, "test", image_size=c.image_size,
                              channels=c.in_channels)  # fmt: skip
    truth = None
    if prior.num_classes:
        try:
            truth, _ = load_labels(dataset, data_dir, "test")
        except (FileNotFoundError, DatasetNotFoundError):
            if labels == "true":
                raise
    pick = spread(len(images), limit)  # evenly spread: CIFAR-10's copy is sorted by class
    images = images[pick]
    truth = None if truth is None else truth[pick]
    coded = {"auto": "auto", "true": truth, "none": None}[labels] if prior.num_classes else None
    r = measure(model, prior, images, coded, truth, one_pass)
    return {"model": str(model_name), "dataset": dataset, "data_source": info.source, **r}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.codec",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, help="one dataset (default: all three)")
    p.add_argument("--model", help="VQ-VAE name or folder (default: the dataset's name)")
    p.add_argument("--prior", help="prior folder or run folder (default: the model's)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--limit", type=int, default=1000, help="N test images, evenly spread (0 = all)")
    p.add_argument(
        "--labels",
        choices=("auto", "true", "none"),
        default="auto",
        help="the class coded: the cheapest per image (default), the test label, or none",
    )
    p.add_argument("--one-pass", action="store_true", help="version 5 files (one-pass encoder)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    a = p.parse_args(argv)
    if (a.model or a.prior) and not a.dataset:
        p.error("--model and --prior need --dataset")
    if a.limit < 0:
        p.error("--limit must be >= 0")
    results, missing = {}, []
    for dataset in [a.dataset] if a.dataset else DATASETS:
        try:
            r = run(a.model or dataset, a.prior, dataset, a.data_dir, a.limit, a.labels,
                    a.one_pass)  # fmt: skip
        except (FileNotFoundError, DatasetNotFoundError) as e:
            print(f"skipped {dataset}: {e}\n", file=sys.stderr)
            missing.append(dataset)
            continue
        results[dataset] = r
        print(table(r["model"], r["data_source"], r) + "\n", flush=True)
    if a.out and results:
        write_json_atomic(a.out, results, indent=2)
    if not results:
        print("error: nothing measured (see above)", file=sys.stderr)
        sys.exit(2)
    return results


if __name__ == "__main__":
    main()
