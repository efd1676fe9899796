"""Independent pieces of one job (a photo's tiles, chunks of its cells) run on several threads.

On the CPU these networks' convolutions are small enough that torch's own intra-op threads
(OpenMP) gain little from a second core and lose much when cores are shared: their threads
spin at every barrier, so two requests with two threads each on two cores fight each other.
Pieces of work on separate Python threads, each running torch with one thread, have no
barriers between them: torch releases the GIL inside its kernels, so ``workers`` pieces run
at once and scale with the cores (a 1 MP photo in 256 px tiles with ``cifar10-rvq-small``:
1.56 s on one thread, 0.83 s on two workers on 2 cores; ``python -m benchmarks.photos``), and
two such jobs on the same cores just share them. Use it with ``torch.set_num_threads(1)``;
with more torch threads each worker's kernels start their own threads too.

Each worker runs with the caller's autograd state (``no_grad``, ``inference_mode``), which is
per thread in torch: without it, work started under ``no_grad`` would record graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def check_workers(workers) -> int:
    """``workers`` as a positive int; ValueError otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive number of threads, got {workers!r}")
    return workers


def thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in their order, computed by up to ``workers``
    threads at once, each with the caller's autograd state. One worker (or one item) runs
    them one by one in the calling thread, each when its result is asked for. The first
    exception ``fn`` raises is raised here (the other pieces already started finish first)."""
    workers = check_workers(workers)
    items = list(items)
    if workers == 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(item: T) -> R:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="vqvae") as pool:
        yield from pool.map(run, items)
