"""Editing and interpolating photos at full resolution in the app: per-stroke time of the
Edit codes brush on a 512 x 512 photo, and the cost of a photo interpolation at its budget.

    python -m benchmarks.paint                     # cifar10, astronaut at 512 x 512
    python -m benchmarks.paint --threads 2 --strokes 40 --no-interpolate

Through the app's handlers (``explorer.Handlers`` over the shipped models): the photo is
reconstructed and opened in Edit codes, then each stroke is one ``Edit.paint_photo`` call (a
brush of ``--radius`` cells at a random cell, a new code) plus the PNG encoding Gradio does
for the code map it returns: the server's whole work for a click. Printed: the median and
the slowest stroke, in wall seconds and process CPU seconds (what it costs on a shared
machine), beside a full re-decode of the grid (what a stroke would cost without the patch)
and a 32 x 32-cell rectangle. With the model's grid prior (in ``--models-dir``), Resample of
a marked 32 x 32-cell rectangle and of the whole grid (``Edit.resample_photo``: the grid
prior's passes and the re-decode). Then one /interpolate call at the frame budget
(``INTERPOLATE_PIXELS``: 8 frames of 512 x 512). Torch threads: by default the app's own
count (``explorer.settings.torch_threads``: one a request on 2 cores). Target: a stroke
<= 0.5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import torch

STROKE_TARGET = 0.5  # seconds


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call of ``fn``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def click_at(cell, shape) -> SimpleNamespace:
    """A select event at the centre of ``cell`` of a photo's code map (as Gradio sends it)."""
    from explorer.settings import EDIT_MAP
    from vqvae.images import code_map_cell_size

    px = code_map_cell_size(shape, EDIT_MAP)
    return SimpleNamespace(index=[cell[1] * px + px // 2, cell[0] * px + px // 2])


def stroke(h, canvas, cell, code, radius=2, tool="brush"):
    """One click's server work: the handler, and the PNG of the map it returns."""
    out = h.edit.paint_photo(
        "cifar10", canvas, code, tool, radius, click_at(cell, canvas.codes.shape)
    )
    out.photo_map.save(io.BytesIO(), format="png")
    return out


def resampling(h, canvas) -> dict:
    """Resample of a marked 32 x 32-cell rectangle and of every cell, timed and printed."""
    shape = canvas.codes.shape
    r = {}
    for name, far in (("32", (min(31, shape[0] - 1), min(31, shape[1] - 1))),
                      ("all", (shape[0] - 1, shape[1] - 1))):  # fmt: skip
        corner = stroke(h, canvas, (0, 0), 0, 0, "mark").canvas
        marked = stroke(h, corner, far, 0, 0, "mark").canvas
        h.edit.resample_photo("cifar10", marked, 1.0, 0)  # warm-up
        s, cpu, out = timed(lambda c=marked: h.edit.resample_photo("cifar10", c, 1.0, 1))
        out.photo_map.save(io.BytesIO(), format="png")
        r |= {f"resample_{name}_s": s, f"resample_{name}_cpu_s": cpu}
        print(f"  Resample {int(marked.marks.sum())} marked cells: {s:.3f} s (CPU {cpu:.3f} s)")
    return r


def interpolation(h, tmp: Path, side: int) -> dict:
    """One /interpolate of two photos (a.png, b.png in ``tmp``) at ``side`` x ``side``, as
    many frames as the budget allows, timed and printed."""
    from explorer.settings import INTERPOLATE_PIXELS, MAX_FRAMES

    frames = min(MAX_FRAMES, INTERPOLATE_PIXELS // (side * side))
    args = (str(tmp / "a.png"), str(tmp / "b.png"), "cifar10", frames, 12, "lerp", True)
    s, cpu, _ = timed(lambda: h.interpolate.gif(*args))
    print(
        f"Interpolate two photos at {side} x {side}, {frames} frames (the budget), "
        f"ping-pong GIF: {s:.2f} s (CPU {cpu:.2f} s)"
    )
    return dict(interpolate_frames=frames, interpolate_s=s, interpolate_cpu_s=cpu)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.paint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the app's count)"
    )
    p.add_argument("--strokes", type=int, default=20)
    p.add_argument("--radius", type=int, default=2, help="brush radius in cells")
    p.add_argument("--side", type=int, default=512, help="the photo's side, px")
    p.add_argument("--no-interpolate", action="store_true")
    p.add_argument("--models-dir", default=None, help="model folders (default: pretrained/)")
    a = p.parse_args(argv)
    from explorer.settings import torch_threads

    a.threads = a.threads or torch_threads()
    if a.threads < 1 or a.strokes < 1 or a.side < 8:
        p.error("--threads and --strokes must be >= 1, --side >= 8")
    warnings.filterwarnings("ignore", message=".*outside of a gradio app.*")
    from skimage import data

    import explorer

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-paint-"))
    h = explorer.Handlers(*([a.models_dir] if a.models_dir else []), cache_dir=tmp)
    photo = PIL.Image.fromarray(data.astronaut()).resize((a.side, a.side), PIL.Image.LANCZOS)
    photo.save(tmp / "a.png")
    PIL.Image.fromarray(data.chelsea()).save(tmp / "b.png")
    grid = h.reconstruct.image(str(tmp / "a.png"), "cifar10", announce=False).grid
    reset_s, reset_cpu, started = timed(lambda: h.edit.reset("cifar10", grid))
    canvas = started.canvas
    shape = canvas.codes.shape
    rng = np.random.default_rng(0)
    stroke(h, canvas, (shape[0] // 2, shape[1] // 2), 1)  # warm-up
    walls, cpus = [], []
    for _ in range(a.strokes):
        cell = (int(rng.integers(shape[0])), int(rng.integers(shape[1])))
        code = int(rng.integers(512))
        wall, cpu, out = timed(lambda c=canvas, at=cell, k=code: stroke(h, c, at, k, a.radius))
        canvas = out.canvas
        walls.append(wall)
        cpus.append(cpu)
    far = (min(31, shape[0] - 1), min(31, shape[1] - 1))  # 32 x 32 cells from the top left
    corner = h.edit.paint_photo("cifar10", canvas, 7, "rectangle", 0, click_at((0, 0), shape))
    rect_s, rect_cpu, _ = timed(lambda: stroke(h, corner.canvas, far, 7, 0, "rectangle"))
    r = {
        "threads": a.threads,
        "photo": [a.side, a.side],
        "grid": list(shape),
        "stroke_median_s": statistics.median(walls),
        "stroke_max_s": max(walls),
        "stroke_median_cpu_s": statistics.median(cpus),
        "full_decode_s": reset_s,
        "full_decode_cpu_s": reset_cpu,
        "rectangle_32_s": rect_s,
        "rectangle_32_cpu_s": rect_cpu,
    }
    print(
        f"Edit codes on a {a.side} x {a.side} photo ({shape[1]} x {shape[0]} codes), "
        f"{a.threads} torch thread(s), brush radius {a.radius}:\n"
        f"  stroke: median {r['stroke_median_s']:.3f} s (CPU {r['stroke_median_cpu_s']:.3f} s), "
        f"slowest {r['stroke_max_s']:.3f} s of {a.strokes}; target <= {STROKE_TARGET} s\n"
        f"  a 32 x 32-cell rectangle: {rect_s:.3f} s (CPU {rect_cpu:.3f} s)\n"
        f"  opening it (a full decode, what every stroke would cost unpatched): "
        f"{reset_s:.3f} s (CPU {reset_cpu:.3f} s)",
        flush=True,
    )
    if h.models.get("cifar10").grid_prior is not None:
        r.update(resampling(h, started.canvas))
    if not a.no_interpolate:
        r.update(interpolation(h, tmp, a.side))
    return r


if __name__ == "__main__":
    main()
