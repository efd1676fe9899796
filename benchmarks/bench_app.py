"""Server-side timings of the app's main actions, and its cold start.

    python -m benchmarks.bench_app                       # the shipped models in pretrained/
    python -m benchmarks.bench_app --models-dir /tmp/m --examples-dir /tmp/ex --repeat 30

Handlers are timed directly (median of --repeat calls after one warm-up; what the server
spends, without HTTP). Cold start spawns ``python app.py`` and times until a gradio_client
/reconstruct call returns. Targets (2 CPU cores): reconstruct <= 50 ms for a 32x32 model,
a 24-frame GIF <= 400 ms, the codebook tab <= 200 ms, cold start <= 10 s. ``compress`` is
the Reconstruct tab's codec panel (the .vqz file under the prior, and JPEG and WebP matched
to its size: ~20 encodes), an event of its own after /reconstruct; ``decompress`` decodes
the file back; both only for models with a prior ("-" otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tools.serve import start_app, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (first-call kernel selection, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def inputs_for(h, name: str, tmp: Path) -> tuple[str, str]:
    m = h.models.get(name)
    if len(m.examples) >= 2:
        return m.examples[0], m.examples[1]
    size, ch = m.config.image_size, m.config.in_channels
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        a = rng.integers(0, 255, (size, size) if ch == 1 else (size, size, 3), np.uint8)
        paths.append(str(tmp / f"{name}-{i}.png"))
        Image.fromarray(a).save(paths[-1])
    return paths[0], paths[1]


def cold_start(models_dir, examples_dir, image: str, model: str) -> tuple[float, float]:
    """Seconds from spawning app.py to the first /reconstruct answer, and the median ms of
    five more /reconstruct round trips through gradio_client (upload, queue, outputs)."""
    from gradio_client import Client, handle_file

    t0 = time.perf_counter()
    proc, url = start_app(models_dir, examples_dir)
    try:
        wait_until_up(url, proc)
        client = Client(url, verbose=False)
        client.predict(handle_file(image), model, api_name="/reconstruct")
        cold = time.perf_counter() - t0
        trips = []
        for _ in range(5):
            t = time.perf_counter()
            client.predict(handle_file(image), model, api_name="/reconstruct")
            trips.append(time.perf_counter() - t)
        return cold, 1000 * statistics.median(trips)
    finally:
        stop(proc)


def gif_frames(a: str) -> int:
    """24, or fewer where a colour model reads photo ``a`` at its own size and 24 of its
    frames would exceed the app's frame budget."""
    from explorer.settings import INTERPOLATE_PIXELS

    with Image.open(a) as im:
        return max(2, min(24, INTERPOLATE_PIXELS // (im.width * im.height)))


def timings(h, name: str, a, b, table, repeat: int) -> dict[str, float]:
    """Median milliseconds of each handler for one model and its two inputs (the codec's
    only for a model with a prior, else NaN)."""
    t = {
        "reconstruct": median_ms(lambda: h.reconstruct.image(a, name), repeat),
        "codebook 2-D": median_ms(lambda: h.codebook.figure(name, "2-D", table), repeat),
        "codebook 3-D": median_ms(lambda: h.codebook.figure(name, "3-D", table), repeat),
        "code details": median_ms(lambda: h.codebook.code(name, 0), repeat),
        "edit": median_ms(lambda: h.edit.decode(name, table), repeat),
        "GIF": median_ms(
            lambda: h.interpolate.gif(a, b, name, gif_frames(a), 12, "lerp", True), repeat
        ),
        "compress": float("nan"),
        "decompress": float("nan"),
    }
    vqz = h.codec.compress(a, name).vqz  # the panel: .vqz, NLL, PNG, JPEG and WebP matched
    if vqz is not None:
        t["compress"] = median_ms(lambda: h.codec.compress(a, name), repeat)
        t["decompress"] = median_ms(lambda: h.codec.decompress(vqz, name), repeat)
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", default=str(ROOT / "pretrained"))
    p.add_argument("--examples-dir", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--no-cold-start", action="store_true")
    args = p.parse_args()

    import torch

    import explorer
    from explorer import settings

    explorer.configure_process()  # the app's torch threads and pixel limit
    h = explorer.Handlers(args.models_dir, args.examples_dir)
    names = h.models.names()
    if not names:
        sys.exit(f"no models in {args.models_dir}")
    print(
        f"{settings.usable_cpus()} usable CPU cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s); median of {args.repeat} calls, ms\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            a, b = inputs_for(h, name, Path(tmp))
            c = h.models.get(name).config
            table = h.reconstruct.image(a, name).grid
            h.codebook.atlas(name)  # built once per model (cached); not in the per-request times
            rows.append(
                (
                    name,
                    f"{c.image_size}x{c.image_size}x{c.in_channels}",
                    timings(h, name, a, b, table, args.repeat),
                )
            )
        cols = list(rows[0][2])
        print(f"{'model':<14} {'input':<10} " + " ".join(f"{c:>13}" for c in cols))
        for name, shape, t in rows:
            print(
                f"{name:<14} {shape:<10} "
                + " ".join(f"{t[c]:>13.1f}" if t[c] == t[c] else f"{'-':>13}" for c in cols)
            )
        print(
            "\n(GIF: 24 frames, lerp, ping-pong (46 frames in the file), 224 px, plus the "
            "frame strip; a colour model's photos at their own size, with fewer frames where "
            "24 exceed the app's frame budget. Handler time only: Gradio's own encoding of "
            "outputs comes on top, see the round trip below.)"
        )
        if not args.no_cold_start:
            a, _ = inputs_for(h, names[0], Path(tmp))
            cold, trip = cold_start(args.models_dir, args.examples_dir, a, names[0])
            print(
                f"\ncold start (spawn `python app.py` -> first /reconstruct answered): {cold:.1f} s"
            )
            print(
                f"/reconstruct round trip through gradio_client, warm ({names[0]}): {trip:.0f} ms"
            )


if __name__ == "__main__":
    main()
