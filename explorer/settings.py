"""Every setting of the app in one place: sizes, limits, disk budgets, concurrency, styling.

Nothing here acts: the process-wide settings (torch threads, PIL's pixel limit, Gradio's
temp folder) are applied by :func:`explorer.app.configure_process`, from ``main``/``launch``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"

DISPLAY = 256  # side of the enlarged images, px
# Colour models read an upload at its own resolution up to this many pixels (larger ones are
# downscaled, never cropped): 1 MP reconstructs in about 1-2 s on 2 cores (BENCHMARKS).
MAX_PHOTO_PIXELS = 1 << 20
MAX_PHOTO_SIDE = 4096  # px: a 1 MP strip may be long, not endless
# The code inspector keeps, per cell of the current image, its code and this many nearest
# codes of the encoder's output with their distances (explorer.tabs.inspector.CellCodes):
# at the photo cap, 65,536 cells x 5 x 4 bytes, about 1.4 MB a session.
INSPECT_NEAREST = 5
# A photo's code map in Edit codes: cells of EDIT_MAP // (longer side in cells) px (4 px for a
# 512 x 512 photo's 128 x 128 grid), found by click position
EDIT_MAP = 512
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
# Photos are encoded and decoded in tiles of about this many pixels a side (each with a halo
# as wide as the network's reach, so the codes equal the whole image's): memory stays bounded,
# and on the CPU it is faster too. Reconstruct runs a photo's tiles on every core
# (photo_workers): cifar10-rvq-small, encode + decode at one torch thread, a 512 x 512 photo
# 0.43 s whole, 0.39 s in 256 px tiles, 0.22 s on two workers; a 1 MP photo 1.51 s in 512 px
# tiles, 1.56 s in 256 px tiles, 0.83 s on two workers (2 idle cores).
PHOTO_TILE = 256
# A photo's Resample (Edit codes) runs the grid prior's passes over the box around the marked
# cells and decodes that box again: a box of a 512 x 512 photo's whole grid took 1.2-2.0 s of
# CPU with the cifar10 model, one torch thread (python -m benchmarks.paint, a 2-core machine
# shared with other jobs), about half of it the passes. Marks spanning a larger box (of a
# larger photo) are refused: the region is resampled in parts.
RESAMPLE_BOX = 128 * 128  # cells
# The codec panel's "optimised + refined" encoder refines a photo's latents
# (vqvae.codec.refine) for at most this many pixel-steps a call: 6 steps of a 512 x 512
# photo, each about a decoder pass forward and back (astronaut at the top rate of
# cifar10-rvq, one torch thread, a loaded 2-core machine: nearest codes 1.6 s, rdo 2.7 s,
# rdo and 3 steps 5.6 s), so at most about what /interpolate's photo budget costs; a 1 MP
# photo gets one step, and Compare rates shares them among its rates. 6 steps gave most of
# 10's gain on held-out photos (BENCHMARKS.md section 17).
REFINE_PIXEL_STEPS = 6 * 512 * 512
# /interpolate decodes frames x image pixels (and encodes the two images): 64 frames of 32x32
# took 0.55 s of CPU. Colour models interpolate photos at their own resolution, where one
# 512 x 512 frame takes ~0.5 s: a budget of 8 frames of 512 x 512 (2 of a photo at the 1 MP
# cap, the fewest a walk has) makes the photo path the one call that costs several seconds
# (~9 s of CPU at the budget: python -m benchmarks.paint); it runs in the expensive queue,
# one at a time. What the page asks for by itself (an interpolation of the examples on
# loading and on a model change) stays within the old second: INTERPOLATE_AUTO_PIXELS, as
# AUTO_FRAMES frames of photos downscaled to fit it (a 3:2 photo at 221 x 148: a walk to
# watch, where the full-size photos would leave room for two frames, A and B).
INTERPOLATE_PIXELS = 2 * MAX_PHOTO_PIXELS
INTERPOLATE_AUTO_PIXELS = 64 * 64 * 64
AUTO_FRAMES = 8
MAX_UPLOAD = "25mb"  # Gradio's limit on an uploaded file
# Any other request body (JSON events, data URLs inside them): the largest a page sends is a
# code grid with its marks (/resample); at the 2x-oversized 256x256 grids photo models will
# bring, as text, both tables are ~600 kB. 1 MB parses in ~10 ms; beyond it, 413 at once.
MAX_BODY_BYTES = 2**20
# Sessions: Gradio keeps each one's state (gr.State values, the last value of every input,
# components updated by events) until 10,000 are stored. One without a page holding its
# heartbeat open and no event queued or running is dropped after this long unused: an API
# client reads its result at once, and a page holds its heartbeat open while it is shown.
SESSION_IDLE_SECONDS = 120.0
SESSION_SWEEP_SECONDS = 10.0
# Blocks of this size or more get their own memory mapping, returned when freed (glibc's
# default, before it raises it): request bodies and their tables never stay resident.
MMAP_THRESHOLD = 128 * 1024

# Disk. The files the app hands out (downloads, GIFs, .vqz) live in one folder per client
# session (see explorer.files.OutputFiles): a session's files are trimmed only by its own
# new ones, beyond its budget; nobody's traffic removes another's files; every file goes
# after FILE_LIFETIME. A GIF is at most ~2 MB (64 frames of noise, ping-pong, 224 px), a
# PNG download a few kB.
SESSION_OUTPUT_BUDGET = 16 * 2**20  # 8 of the biggest GIFs; beyond, its own oldest go
SESSION_OUTPUT_FILES = 256  # ... or beyond this many (a .vqz is a few dozen bytes)
OUTPUT_BUDGET = 128 * 2**20  # all sessions: beyond it new files are refused for a while;
# half of Gradio's cache budget, which holds them when the app owns it: uploads keep the rest
MAX_OUTPUT_FILES = 20_000  # all sessions, files: the bookkeeping stays small
OUTPUT_WRITE_SECONDS = 30.0  # a result is written within this after its file is made
# Gradio's cache (uploads, output images, its copies of our files), when the app owns it.
GRADIO_CACHE_BUDGET = 256 * 2**20  # beyond it uploads are refused until files expire
UPLOAD_PER_ADDRESS = 64 * 2**20  # one client address's uploads within FILE_LIFETIME
# delete_cache: every 5 min, files older than 30 min (a page fetches a result within seconds
# of its event, and an upload is reused for a while; a refused upload waits at most 5 min
# once files have expired)
GRADIO_CACHE_LIFETIME = (300, 1800)
FILE_LIFETIME = GRADIO_CACHE_LIFETIME[1]  # our files go when Gradio's copies do
# a thumbnail's .vqz file is a few dozen bytes, a photo's (1 MP at most) some 10-50 kB at one
# stage, a few hundred kB at the highest rate of a four-stage model; anything bigger is no .vqz
MAX_VQZ_BYTES = 512 * 1024

# The drawing pad's uploads (see explorer.guards.guard_drawing_pad).
PAD_BLOB_BYTES = 1_000_000  # a 280x280 RGBA PNG is under 320 kB
PAD_BLOB_PIXELS = 1024 * 1024
PAD_BLOBS = 64  # drawings waiting for their event, all sessions together
PAD_BLOB_SECONDS = 120.0

# Models listed first, in this order: digits are the quickest to understand.
MODEL_ORDER = ("mnist", "fashion-mnist", "cifar10")

TITLE = "VQ-VAE explorer"
INTRO = """# VQ-VAE explorer
A VQ-VAE squeezes an image into a small grid of **codes** (indices into a learned codebook)
and decodes them back. Pick a model, then see what it keeps and what its codes mean."""

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
/* small uploads (a 28x28 digit) fill their box instead of sitting there as a dot */
.fill-img img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.numbers input { font-variant-numeric: tabular-nums; }
footer { display: none !important; }
/* an event that fails leaves its outputs as they were, and says why once (its toast): no red
   "Error" pill over, or in place of, the last good result */
.wrap:has(> .error) { display: none !important; }
/* the code inspector's outline of the clicked cell, over the input, reconstruction, code map */
.cell-outline, .cell-hover { position: absolute; pointer-events: none;
  box-sizing: content-box; border: 2px solid #ff1493; outline: 1px solid #fff;
  min-width: 3px; min-height: 3px; }
/* the pictures fill their box, also full screen (where the outlines expect them) */
#orig img, #recon img, #codemap img { object-fit: contain; }
/* the cell under the pointer, on every picture */
.cell-hover { border: 2px dashed #ffd400; outline: 1px solid #000; }
/* Galleries: as many tiles a row as fit (Gradio's fixed column count of 100 px tiles cuts
   off, without a hint, the columns a narrow box has no room for), and a gallery that
   scrolls shows its scrollbar (overlay scrollbars hide it until touched) */
.grid-container {
  grid-template-columns: repeat(auto-fill, minmax(72px, 1fr)) !important;
  grid-template-rows: none !important;
  grid-auto-rows: auto !important;
}
#samples .grid-container {
  grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)) !important;
}
.grid-wrap::-webkit-scrollbar { width: 10px; }
.grid-wrap::-webkit-scrollbar-thumb { background: #a3a3b8; border-radius: 5px; }
.grid-wrap::-webkit-scrollbar-track { background: #ececf3; }
/* Tables: numbers never wrap digit by digit (a phone); a table wider than its box scrolls */
.prose table { display: block; overflow-x: auto; width: fit-content; max-width: 100%; }
.prose td:not(:first-child), .prose th:not(:first-child) { white-space: nowrap; }
.prose td:first-child { min-width: 9em; }
/* rendered for the page's scripts (a drag's path and the button that sends it), never shown */
.vq-hidden { display: none !important; }
/* a drag over a photo's code map paints: no native image drag, text selection or scrolling */
#photo-map img { touch-action: none; user-select: none; -webkit-user-drag: none; }
/* the model card goes below the model picker on a phone instead of a column of single words */
#model-card { min-width: min(340px, 100%); }
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


def photo_workers(cpus: int | None = None) -> int:
    """Threads a photo's Reconstruct runs its tiles and inspector cells on
    (:mod:`vqvae.parallel`): the usable CPUs over torch's threads, so one request uses every
    core (2 on 2 cores, one torch thread each). Two requests at once share the cores, as two
    requests of one thread each would: no request waits longer than it did on one core,
    and one alone finishes about twice as fast. Only the interactive photo path does this: the
    expensive events stay on one thread, leaving a core to the others."""
    return max(1, (cpus or usable_cpus()) // torch.get_num_threads())
