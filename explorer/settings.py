"""Every setting of the app in one place: sizes, limits, disk budgets, concurrency, styling.

Nothing here acts: the process-wide settings (torch threads, PIL's pixel limit, Gradio's
temp folder) are applied by :func:`explorer.app.configure_process`, from ``main``/``launch``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"

DISPLAY = 256  # side of the enlarged images, px
MAX_FRAMES = 64
MAX_FPS = 50  # GIF delays are whole centiseconds: 50 fps is the finest
MAX_SAMPLES = 64
CONCURRENCY = 2  # cheap model-running events the queue runs at once (see explorer.ui.MODEL)
QUEUE_SIZE = 64

# Fairness (explorer.fairness). Expensive events (sample, resample, compress, decompress,
# interpolate) run one at a time: with one torch thread each, the second core stays free for
# the cheap events (reconstruct, edit, code) and the server itself.
EXPENSIVE_CONCURRENCY = 1
EXPENSIVE_PER_SESSION = 1
# A session's next expensive job waits this long at the door for its running one (the page
# sends two when it opens): about the longest a full expensive queue takes to drain.
EXPENSIVE_WAIT = 20.0
# A household or office behind one NAT shares an address: two people may each have one job.
EXPENSIVE_PER_ADDRESS = 2
# Expensive jobs queued or running, all clients together: with each at most ~1 s of CPU, the
# last waits ~16 s; the other QUEUE_SIZE - 16 places stay for the cheap events.
EXPENSIVE_QUEUE = 16
# X-Forwarded-For names the client (its last public address) only behind proxies that append
# the peer they saw (a Hugging Face Space, which sets $SPACE_ID; there the TCP peer is an
# internal proxy): elsewhere anyone could write the header and pass for as many clients as
# they like, so the TCP peer counts.
TRUST_FORWARDED_FOR = os.environ.get(
    "VQVAE_TRUST_FORWARDED_FOR", "1" if os.environ.get("SPACE_ID") else "0"
).lower() in ("1", "true", "yes")

# Cost caps: no call costs more than about 1 s of CPU on 2 cores (one torch thread).
# /sample draws samples x h x w codes, twice over with guidance != 1 and a class (the prior
# runs with and without it): 32 cifar10 samples (8x8 codes) took 0.73 s of CPU, 64 with
# guidance 2.1 s (benchmarks in BENCHMARKS.md, "Fairness").
SAMPLE_CODES = 32 * 8 * 8
# /interpolate decodes frames x image pixels: 64 frames of 32x32 took 0.55 s of CPU.
INTERPOLATE_PIXELS = 64 * 32 * 32
MAX_UPLOAD = "25mb"  # Gradio's limit on an uploaded file

# Disk: our copies of files handed to Gradio, and Gradio's cache of what it served.
# Budgets in bytes. Beyond them, the newest 2 * CONCURRENCY files (those of requests in
# flight) are kept: with GIFs of at most ~2 MB (64 frames of noise, ping-pong, 224 px) both
# folders together stay under 200 MB.
OUTPUT_BUDGET = 16 * 2**20  # Gradio has its own copy of a file once its event has answered
GRADIO_CACHE_BUDGET = 96 * 2**20  # only when the app owns Gradio's cache folder
GRADIO_CACHE_LIFETIME = (600, 1800)  # delete_cache: every 10 min, files older than 30 min
MAX_VQZ_BYTES = 64 * 1024  # a .vqz file is a few dozen bytes; anything this big is no .vqz

# The drawing pad's uploads (see explorer.guards.guard_drawing_pad).
PAD_BLOB_BYTES = 1_000_000  # a 280x280 RGBA PNG is under 320 kB
PAD_BLOB_PIXELS = 1024 * 1024
PAD_BLOBS = 64  # drawings waiting for their event, all sessions together
PAD_BLOB_SECONDS = 120.0

# Models listed first, in this order: digits are the quickest to understand.
MODEL_ORDER = ("mnist", "fashion-mnist", "cifar10")

TITLE = "VQ-VAE explorer"
INTRO = """# VQ-VAE explorer
A VQ-VAE squeezes an image into a small grid of **codes**, each an index into a learned
codebook, and decodes the grid back into an image. Pick a model, then look at what it keeps,
what its codes mean, and what happens when you change them."""

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
/* small uploads (a 28x28 digit) fill their box instead of sitting there as a dot */
.fill-img img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.numbers input { font-variant-numeric: tabular-nums; }
footer { display: none !important; }
"""


def usable_cpus(cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may really use: its affinity mask, capped by the cgroup v2 CPU quota
    (``cpu.max``: "200000 100000" is 2 CPUs; "max ..." no quota). ``os.cpu_count()`` reports
    the host's CPUs instead (16 on a 2-vCPU Hugging Face Space)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = (Path(cgroup) / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            n = min(n, max(1, math.ceil(float(quota) / float(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is the limit
    return max(1, n)


def torch_threads(cpus: int | None = None) -> int:
    """One share of the usable CPUs per concurrent request. These models are small: threads
    beyond cores / concurrent requests only fight each other (1 thread is fastest on 2 cores)."""
    return max(1, (cpus or usable_cpus()) // CONCURRENCY)
