"""A VQ-VAE on real photos at their own resolution, against JPEG, WebP and AVIF.

    python -m benchmarks.photos --model cifar10
    python -m benchmarks.photos --model cifar10 --photos astronaut chelsea --out photos.json

The photo suite is scikit-image's bundled photos (``skimage.data``, a dev dependency: see
``assets/photos/README.md`` for their licences). Per photo, opened with
:func:`vqvae.images.load_photo` (at its own size, under the 1 MP cap):

- time: encode + decode (``VQVAE.encode_image`` / ``decode_codes``, whole image, channels_last
  on the CPU) on ``--threads`` torch threads (default 2), the best of ``--repeat`` runs, in
  wall seconds and in the process's CPU seconds (what it costs on a machine others share);
- the plain rate: h*w*log2(K) bits for the (ceil(H/d), ceil(W/d)) code grid, in bytes and
  bits per pixel; PSNR and SSIM of the reconstruction;
- JPEG, WebP and AVIF files of the photo at the quality whose whole file is closest to those
  bytes (:func:`vqvae.compare.match_size`), their size and PSNR / SSIM (AVIF only where the
  installed Pillow writes it: ``PIL.features.check("avif")``);
- thumbnail PSNR: the model on the photo's centre crop shrunk to its training size
  (:func:`vqvae.images.to_model_input`), for contrast.

Then the targets: encode + decode time of a 512 x 512 and a 1024 x 1024 photo (astronaut,
resized), in the library and in the app's Reconstruct handler (the PNG file read, encoded,
decoded, the three pictures and the inspector's cells made; on the torch threads the app
gives one request, ``explorer.settings.torch_threads()``: 1 on 2 cores, the tiles on
``explorer.settings.photo_workers()`` threads), alone and two requests at once (two
visitors: the time until both are done), and the peak extra
resident memory at the 1 MP cap, whole and in ``--tile`` tiles (the process's peak RSS,
reset through ``/proc/self/clear_refs`` on Linux, minus its RSS before the call).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import PIL.features
import PIL.Image
import torch

import vqvae
from vqvae.compare import ALL_FORMATS, available_formats, match_size
from vqvae.data import PHOTO_SUITE, suite_photo
from vqvae.files import write_json_atomic
from vqvae.images import PHOTO_MAX_PIXELS, load_photo, to_model_input

SUITE = PHOTO_SUITE
TARGETS = {512 * 512: 0.4, PHOTO_MAX_PIXELS: 1.2}  # pixels -> seconds (encode + decode)
MEMORY_TARGET_MB = 500


def reconstruct(model, x: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    codes = model.encode_image(x, tile=tile)
    return model.decode_codes(codes, x.shape[-2:], tile=tile)


def best_time(fn, repeat: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of the fastest of ``repeat`` calls of ``fn``. On
    a shared machine the wall time counts other processes' load; the CPU time, summed over
    the torch threads, is what the work itself took (with T threads on T idle cores the
    wall time is about CPU / T)."""
    times = []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t, time.process_time() - c))
    return min(times)


def best_pair_time(fn, repeat: int) -> float:
    """Wall seconds of the fastest of ``repeat`` rounds of two ``fn()`` calls started at once
    on two threads (two visitors' requests), to the later one's end."""
    import threading

    times = []
    for _ in range(repeat):
        calls = [threading.Thread(target=fn) for _ in range(2)]
        t = time.perf_counter()
        for c in calls:
            c.start()
        for c in calls:
            c.join()
        times.append(time.perf_counter() - t)
    return min(times)


def measure_photo(model, name: str, repeat: int) -> dict:
    c = model.config
    x, notes = load_photo(suite_photo(name), channels=c.in_channels)
    H, W = x.shape[-2:]
    seconds, cpu = best_time(lambda: reconstruct(model, x), repeat)
    y = reconstruct(model, x)
    h, w = vqvae.grid.grid_shape((H, W), c.downsample)
    bits = h * w * math.log2(c.codebook_size)
    target = math.ceil(bits / 8)
    r = {
        "photo": name,
        "size": [W, H],
        "notes": notes,
        "grid": [h, w],
        "bytes": target,
        "bpp": bits / (H * W),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "psnr": float(vqvae.psnr(y, x)),
        "ssim": float(vqvae.ssim(y, x)),
    }
    for fmt in available_formats():
        m = match_size(x[0], target, fmt)
        z = torch.from_numpy(np.array(m.image)).float().div(255.0)
        z = z[None, None] if z.dim() == 2 else z.permute(2, 0, 1)[None]
        r[fmt] = {
            "quality": m.quality,
            "bytes": m.file_bytes,
            "psnr": float(vqvae.psnr(z, x)),
            "ssim": float(vqvae.ssim(z, x)),
        }
    thumb, _ = to_model_input(
        PIL.Image.fromarray(suite_photo(name)), c.in_channels, c.image_size, invert=False
    )
    with torch.no_grad():
        r["thumbnail_psnr"] = float(vqvae.psnr(model.eval()(thumb).reconstruction, thumb))
    return r


def _rss_mb(key: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024


def peak_extra_mb(fn) -> float | None:
    """Peak resident memory during ``fn()`` above the resident memory before it, in MB;
    None where the kernel cannot reset the peak (not Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _rss_mb("VmRSS")
    except OSError:
        return None
    fn()
    return _rss_mb("VmHWM") - before


def app_handler(source: str, folder: Path):
    """(the app's Reconstruct handler, the name it knows model ``source`` by), with the
    app's torch threads per request."""
    import explorer
    from explorer import settings

    h = explorer.Handlers(folder / "models", folder / "examples", folder / "cache",
                          sources=[source])  # fmt: skip
    return h.reconstruct, h.models.names()[0], settings.torch_threads(), settings.photo_workers


def measure_targets(model, source: str, repeat: int, tile: int) -> list[dict]:
    import tempfile

    photo = PIL.Image.fromarray(suite_photo("astronaut"))
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="photos-bench-"))
    handler, name, app_threads, app_workers = app_handler(source, folder)
    for pixels, limit in TARGETS.items():
        side = math.isqrt(pixels)
        resized = photo.resize((side, side), PIL.Image.LANCZOS)
        x, _ = load_photo(resized)
        row = {"size": [side, side], "limit_seconds": limit}
        row["seconds"], row["cpu_seconds"] = best_time(lambda x=x: reconstruct(model, x), repeat)
        resized.save(folder / f"{side}.png")
        threads = torch.get_num_threads()
        torch.set_num_threads(app_threads)
        try:
            call = partial(handler.image, str(folder / f"{side}.png"), name, announce=False)
            row["app_seconds"], row["app_cpu_seconds"] = best_time(call, repeat)
            row["app_pair_seconds"] = best_pair_time(call, repeat)
            row["app_workers"] = app_workers()
        finally:
            torch.set_num_threads(threads)
        row["app_threads"] = app_threads
        if pixels == PHOTO_MAX_PIXELS:
            row["peak_extra_mb"] = peak_extra_mb(lambda x=x: reconstruct(model, x))
            row["tile"] = tile
            tiled = best_time(lambda x=x: reconstruct(model, x, tile), repeat)
            row["tiled_seconds"], row["tiled_cpu_seconds"] = tiled
            row["tiled_peak_extra_mb"] = peak_extra_mb(lambda x=x: reconstruct(model, x, tile))
            row["limit_mb"] = MEMORY_TARGET_MB
        rows.append(row)
    return rows


def table(r: dict) -> str:
    fmts = [f for f in ALL_FORMATS if f in r["photos"][0]]
    head = "| photo | size | grid | bytes (bpp) | time (CPU time) | VQ-VAE PSNR / SSIM | "
    head += " | ".join(f"{f.upper()} PSNR / SSIM (bytes)" for f in fmts) + " | thumbnail PSNR |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in r["photos"]:
        cells = [
            p["photo"],
            f"{p['size'][0]} x {p['size'][1]}",
            f"{p['grid'][1]} x {p['grid'][0]}",
            f"{p['bytes']:,} ({p['bpp']:.4f})",
            f"{p['seconds']:.2f} s ({p['cpu_seconds']:.2f} s)",
            f"{p['psnr']:.2f} / {p['ssim']:.3f}",
            *(f"{p[f]['psnr']:.2f} / {p[f]['ssim']:.3f} ({p[f]['bytes']:,})" for f in fmts),
            f"{p['thumbnail_psnr']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if r["targets"]:
        lines += ["", "| target | measured (CPU time) | limit |", "|---|---|---|"]
    for t in r["targets"]:
        size = f"{t['size'][0]} x {t['size'][1]}"
        lines.append(
            f"| {size} encode + decode | {t['seconds']:.2f} s ({t['cpu_seconds']:.2f} s) "
            f"| {t['limit_seconds']} s |"
        )
        if "app_seconds" in t:
            how = f"{t['app_threads']} torch thread{'s' if t['app_threads'] > 1 else ''}"
            if "app_workers" in t:
                how += f", tiles on {t['app_workers']} worker{'s' if t['app_workers'] > 1 else ''}"
            lines.append(
                f"| {size} in the app's Reconstruct handler ({how}) | {t['app_seconds']:.2f} s "
                f"({t['app_cpu_seconds']:.2f} s) | {t['limit_seconds']} s |"
            )
        if "app_pair_seconds" in t:
            lines.append(
                f"| {size} in the app's handler, two requests at once: both done | "
                f"{t['app_pair_seconds']:.2f} s | |"
            )
        if "peak_extra_mb" in t:
            mb = t["peak_extra_mb"]
            lines.append(
                f"| {size} peak extra memory, whole | "
                f"{'n/a' if mb is None else f'{mb:.0f} MB'} | {t['limit_mb']} MB |"
            )
            mb = t["tiled_peak_extra_mb"]
            lines.append(
                f"| {size} in {t['tile']} px tiles: time, peak extra memory | "
                f"{t['tiled_seconds']:.2f} s ({t['tiled_cpu_seconds']:.2f} s), "
                f"{'n/a' if mb is None else f'{mb:.0f} MB'} | |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.photos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="cifar10", help="shipped name, folder or Hub repo id")
    p.add_argument("--photos", nargs="+", choices=SUITE, default=list(SUITE))
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per photo, best kept")
    p.add_argument("--tile", type=int, default=512, help="tile side for the memory target")
    p.add_argument("--no-targets", action="store_true", help="skip the 512 x 512 and 1 MP runs")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    a = p.parse_args(argv)
    if a.threads < 1 or a.repeat < 1 or a.tile < 1:
        p.error("--threads, --repeat and --tile must be >= 1")
    torch.set_num_threads(a.threads)
    model = vqvae.VQVAE.from_pretrained(a.model).eval()
    if model.config.in_channels != 3:
        print(f"error: {a.model} is a greyscale model; photos need a colour one", file=sys.stderr)
        sys.exit(2)
    if not PIL.features.check("avif"):
        print(f"note: Pillow {PIL.__version__} cannot write AVIF; AVIF left out", file=sys.stderr)
    r = {
        "model": str(a.model),
        "threads": a.threads,
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "photos": [measure_photo(model, name, a.repeat) for name in a.photos],
        "targets": [] if a.no_targets else measure_targets(model, a.model, a.repeat, a.tile),
    }
    print(table(r), flush=True)
    if a.out:
        write_json_atomic(a.out, r, indent=2)
    return r


if __name__ == "__main__":
    main()
