"""Rate-distortion curves of the .vqz codec against JPEG, WebP and AVIF, in CompressAI's
results layout, with the Bjontegaard delta rate (BD-rate) of each codec series against each.

    python -m benchmarks.rd --data-dir ../shared/data               # the photo suite, 1000 CIFAR-10
    python -m benchmarks.rd --limit 2 --out /tmp/rd                  # a quick run

Datasets: ``photos``, the photo suite of ``benchmarks.photos`` (scikit-image's photos, each
opened at its own size by :func:`vqvae.images.load_photo`); ``folder``, the photos of
``--photos-dir`` opened the same way (up to 1 MP; e.g. the held-out photos of
``python -m train.photo_set``, to choose settings on photos the benchmark never sees); and
``cifar10``, ``--limit``
(default 1000) test images evenly spread over the split (the JPEG q75 copy; ``--data-dir``
as ``benchmarks.codec`` takes it). ``--limit N`` takes the first N photos and N CIFAR-10
images.

Per image (:func:`vqvae.rd.image_curves`): JPEG, WebP and AVIF (Pillow; AVIF where it writes
it) at each of ``--qualities``, whole files; and the codec's operating points
(:func:`vqvae.codec.points.operating_points`; ``--rdo L``: photo codes chosen for their
error plus L x their bits, :mod:`vqvae.codec.rdo`; ``--refine N``: their latents first
refined for N steps, :mod:`vqvae.codec.refine`): ``.vqz`` files where the codec codes the
image (the model's training size under its prior; any other size at every rate under its
grid prior), the model's plain fixed-length codes (h*w*log2 K bits) where it has neither.
Each point: bits per pixel, PSNR (RGB) and, on images
whose sides are all >= 161 px, MS-SSIM (five scales; not defined on 32 x 32 images, so the
CIFAR-10 files have none). Averaged point by point over a dataset's images, as CompressAI
averages, and written one JSON file per codec and dataset (``OUT/<dataset>/<codec>.json``:
``{"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-rgb-db",
"quality" | "rate"}}``), and every dataset's files in OUT (this run's and earlier runs')
drawn into ``OUT/rd.png``.

Then, per dataset, each codec series against JPEG, WebP and AVIF: the BD-rate
(:func:`vqvae.metrics.bd_rate`, pchip) on PSNR and on MS-SSIM in dB, where the series has
two points or more; and at each of its points, the rate change at equal quality (its bits
against the other curve's, interpolated to its PSNR: :func:`vqvae.metrics.rate_at`). The
formats' BD-rates against each other follow, for scale. ``--replot`` prints the tables and
draws the plot of the files already in OUT (runs of one dataset each, combined).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import PIL
import torch

import vqvae
from vqvae.codec.points import describe
from vqvae.compare import QUALITIES, available_formats
from vqvae.crops import PhotoFolderError, photo_files
from vqvae.data import PHOTO_SUITE, DatasetNotFoundError, load_uint8, spread, suite_photo
from vqvae.files import write_json_atomic
from vqvae.images import load_photo
from vqvae.metrics import bd_rate
from vqvae.rd import FORMAT_NAMES, image_curves, mean_curves, quality_db, rate_changes, results

DATASETS = ("photos", "cifar10", "folder")
OUT = Path("benchmarks/results/rd")
BPP_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10)  # the plot's bits-per-pixel axis


def dataset_images(dataset: str, data_dir, limit: int | None, photos_dir=None) -> tuple[list, str]:
    """(images, each (3, H, W) float in [0, 1]; where they come from)."""
    if dataset == "photos":
        names = PHOTO_SUITE[:limit] if limit else PHOTO_SUITE
        return [load_photo(suite_photo(n))[0][0] for n in names], f"photos: {', '.join(names)}"
    if dataset == "folder":
        if photos_dir is None:
            raise DatasetNotFoundError("the folder dataset needs --photos-dir")
        files = photo_files(Path(photos_dir))[:limit]
        return [load_photo(f)[0][0] for f in files], (
            f"photos in {photos_dir}: {', '.join(f.name for f in files)}"
        )
    images, info = load_uint8("cifar10", data_dir, "test", image_size=32, channels=3)
    pick = spread(len(images), limit or 1000)  # the copy is sorted by class
    return list(
        images[pick].float().div(255.0)
    ), f"{len(pick)} CIFAR-10 test images ({info.source})"


def measure(
    images: list, model, prior, formats, qualities, grid_prior=None, rdo=0.0, refine=0
) -> dict[str, dict]:
    """The mean curves of ``images`` (:func:`vqvae.rd.mean_curves`), with progress on stderr."""
    per_image, t = [], time.perf_counter()
    for i, x in enumerate(images):
        per_image.append(image_curves(x, model, prior, grid_prior=grid_prior, formats=formats,
                                      qualities=qualities, rdo=rdo, refine=refine))  # fmt: skip
        if (i + 1) % 50 == 0 or i + 1 == len(images):
            print(
                f"  {i + 1}/{len(images)} images, {time.perf_counter() - t:.0f} s", file=sys.stderr
            )
    return mean_curves(per_image)


def _quality(curve: dict, metric: str) -> list | None:
    """The curve's qualities in dB for ``metric`` ("psnr" or "ms-ssim"), if it has them."""
    return quality_db(curve, f"{metric}-rgb")


def compare(test: dict, anchor: dict, metric: str, points: bool = True) -> str:
    """A table cell: ``test`` against ``anchor`` on ``metric``: the BD-rate (two points or
    more), and with ``points`` each of ``test``'s points' rate change at equal quality."""
    qt, qa = _quality(test, metric), _quality(anchor, metric)
    if qt is None or qa is None:
        return "n/a"
    parts = []
    if len(qt) >= 2:
        try:
            parts.append(f"BD-rate {bd_rate((anchor['bpp'], qa), (test['bpp'], qt)):+.1f} %")
        except ValueError as e:
            parts.append(f"no BD-rate ({e})")
    changes = rate_changes(test, anchor, f"{metric}-rgb") if points else []
    for bpp, q, change in zip(test["bpp"], qt, changes, strict=False):
        if change is None:
            parts.append(f"outside its range at {bpp:.3f} bpp ({q:.2f} dB)")
        else:
            parts.append(f"{change:+.1f} % at {bpp:.3f} bpp")
    return "; ".join(parts)


def table(dataset: str, curves: dict[str, dict]) -> str:
    """The codec's series against each format, then the formats against each other (their
    BD-rates only), on PSNR and MS-SSIM (dB), as markdown."""
    formats = [n for n in curves if n in FORMAT_NAMES.values()]
    ours = [n for n in curves if n not in formats]
    head = "| series | metric | " + " | ".join(f"against {f}" for f in formats) + " |"
    lines = [f"#### {dataset}", "", head, "|" + "---|" * (len(formats) + 2)]
    for name in ours + formats[1:]:
        for metric, label in (("psnr", "PSNR"), ("ms-ssim", "MS-SSIM (dB)")):
            if _quality(curves[name], metric) is None:
                continue
            cells = [
                "" if f == name else compare(curves[name], curves[f], metric, name in ours)
                for f in formats
            ]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves_by_dataset: dict[str, dict], path: Path) -> None:
    """The curves as a PNG: one row per dataset, PSNR and MS-SSIM (dB) side by side."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    rows = len(curves_by_dataset)
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4.5 * rows), squeeze=False)
    for (dataset, curves), (ax_p, ax_m) in zip(curves_by_dataset.items(), axes, strict=True):
        for ax, metric, label in ((ax_p, "psnr", "PSNR (dB)"), (ax_m, "ms-ssim", "MS-SSIM (dB)")):
            drawn = False
            for name, c in curves.items():
                q = _quality(c, metric)
                if q is None:
                    continue
                ours = name not in FORMAT_NAMES.values()
                style = ("*" if ours else "o") + ("-" if len(q) > 1 else "")
                ax.plot(c["bpp"], q, style, label=name, markersize=14 if ours else 5)
                drawn = True
            ax.set(xlabel="bits per pixel", ylabel=label, title=f"{dataset}: {label}")
            ax.grid(alpha=0.3)
            if drawn:
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(BPP_TICKS))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.legend(loc="lower right")
            else:
                ax.text(0.5, 0.5, "MS-SSIM is not defined at this size", ha="center",
                        transform=ax.transAxes)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def description(name: str, source: str, model: str, curve: dict) -> str:
    what = {
        "JPEG": "JPEG (Pillow/libjpeg, optimized Huffman tables, 4:2:0), whole files",
        "WebP": "lossy WebP (Pillow/libwebp, method 6), whole files",
        "AVIF": "AVIF (Pillow/libavif, speed 6, 4:2:0), whole files",
    }.get(name)
    if what is None:
        rates = ", ".join(curve.get("rate", []))
        what = f"{describe(name)}; model {model!r}, rates: {rates}"
    ms = ("MS-SSIM: five scales (pytorch_msssim)" if "ms-ssim-rgb" in curve
          else "no MS-SSIM: five-scale MS-SSIM needs sides >= 161 px")  # fmt: skip
    return f"{what}; {source}; Pillow {PIL.__version__}; mean per point over images; {ms}"


def saved_curves(out: Path) -> dict[str, dict]:
    """{dataset: {name: curve}} of every results file under ``out`` (this run's and any
    earlier run's datasets), for the plot."""
    found = {}
    for dataset in DATASETS:
        for f in sorted((out / dataset).glob("*.json")):
            doc = json.loads(f.read_text())
            found.setdefault(dataset, {})[doc["name"]] = doc["results"]
    order = list(FORMAT_NAMES.values())  # the formats first, then the codec's series
    return {
        d: dict(sorted(c.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9))
        for d, c in found.items()
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.rd",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        choices=DATASETS,
        help="default: photos and cifar10, and folder with --photos-dir",
    )
    p.add_argument("--model", default="cifar10", help="shipped name or folder (with its prior)")
    p.add_argument("--data-dir", default="data", help="where cifar10-jpeg is")
    p.add_argument(
        "--limit", type=int, help="N images per dataset (default: 6 photos, 1000 CIFAR-10)"
    )
    p.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    p.add_argument("--formats", nargs="+", choices=available_formats(), default=available_formats())
    p.add_argument(
        "--photos-dir", help="the folder dataset: photos of any size (e.g. data/photos/test)"
    )
    p.add_argument(
        "--rdo",
        type=float,
        default=0.0,
        help="photo codes chosen for error + RDO x bits (vqvae.codec.rdo; default 0: the "
        "nearest codes); the curve is named '.vqz rdo=RDO'",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        help="photo latents refined for REFINE steps before their codes are chosen "
        "(vqvae.codec.refine; default 0); the curve is named '.vqz refine=REFINE'",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", type=Path, default=OUT, help=f"folder for JSON and rd.png ({OUT})")
    p.add_argument(
        "--replot", action="store_true", help="measure nothing: tables and plot of OUT's files"
    )
    a = p.parse_args(argv)
    if a.replot:
        saved = saved_curves(a.out)
        if not saved:
            p.error(f"no results in {a.out}")
        print("\n\n".join(table(d, c) for d, c in saved.items()), flush=True)
        plot(saved, a.out / "rd.png")
        return saved
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be >= 1")
    if any(not 1 <= q <= 100 for q in a.qualities):
        p.error("--qualities must be in 1..100")
    if not a.rdo >= 0:
        p.error("--rdo must be >= 0")
    if a.refine < 0:
        p.error("--refine must be >= 0")
    if a.datasets is None:
        a.datasets = ["photos", "cifar10"] + (["folder"] if a.photos_dir else [])
    torch.set_num_threads(a.threads)
    model = vqvae.load_pretrained(a.model).eval()
    try:
        prior = vqvae.load_prior(a.model, model=model)
    except FileNotFoundError:
        print(f"note: {a.model} has no prior: its plain codes only", file=sys.stderr)
        prior = None
    try:
        grid_prior = vqvae.load_grid_prior(a.model, model=model)
    except FileNotFoundError:
        print(f"note: {a.model} has no grid prior: photos get its plain codes", file=sys.stderr)
        grid_prior = None
    print(f"formats: {', '.join(a.formats)} (Pillow {PIL.__version__})", file=sys.stderr)
    all_curves = {}
    for dataset in a.datasets:
        try:
            images, source = dataset_images(dataset, a.data_dir, a.limit, a.photos_dir)
        except (FileNotFoundError, DatasetNotFoundError, PhotoFolderError) as e:
            print(f"skipped {dataset}: {e}", file=sys.stderr)
            continue
        print(f"{dataset}: {source}", file=sys.stderr)
        curves = all_curves[dataset] = measure(
            images, model, prior, a.formats, a.qualities, grid_prior, a.rdo, a.refine
        )
        (a.out / dataset).mkdir(parents=True, exist_ok=True)
        for name, curve in curves.items():
            doc = results(name, description(name, source, a.model, curve), curve)
            write_json_atomic(a.out / dataset / f"{_slug(name)}.json", doc, indent=2)
        print(table(dataset, curves) + "\n", flush=True)
    if not all_curves:
        print("error: nothing measured (see above)", file=sys.stderr)
        sys.exit(2)
    plot(saved_curves(a.out), a.out / "rd.png")
    print(f"wrote {a.out}/<dataset>/<codec>.json and {a.out / 'rd.png'}", file=sys.stderr)
    return all_curves


if __name__ == "__main__":
    main()
