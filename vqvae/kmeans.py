"""k-means in torch, on the samples' own device: scikit-learn's algorithm (greedy k-means++
seeding, then Lloyd iterations with its stopping rule and empty-cluster relocation), so that a
codebook can be initialised on the GPU without a round trip through numpy.

    centres, labels, inertia, n_iter = kmeans(x, 512, seed=0)  # x: (N, D) float

Distances are computed a block of rows at a time (at most ~16 MB of distances in flight), so
50k x 64 samples with K = 512 need a few MB beyond the samples themselves.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

_BLOCK = 1 << 22  # distances in flight: rows x K at most this many float32 (16 MB)


class KMeansResult(NamedTuple):
    centres: torch.Tensor  # (K, D) float32, on the samples' device
    labels: torch.Tensor  # (N,) int64, the nearest centre of each sample
    inertia: float  # sum over samples of the squared distance to their centre
    n_iter: int  # Lloyd iterations run


@torch.no_grad()
def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D), any float dtype, computed in float32 on ``x``'s
    device, into ``k`` clusters.

    As ``sklearn.cluster.KMeans(k, n_init=1, max_iter=iters, tol=tol)``: greedy k-means++
    seeding (2 + ln k candidates per centre, the one that lowers the potential most), then
    at most ``iters`` Lloyd iterations, stopping when no label changes or when the centres
    move by less than ``tol`` times the mean per-feature variance (sum of squared shifts);
    a cluster left empty takes the sample farthest from its centre. Deterministic for a
    given ``seed`` (or ``generator``, on ``x``'s device) and device.

    Returns centres (K, D) float32, labels (N,) int64, inertia (float: sum of squared
    distances to the assigned centres) and the number of iterations run. Raises ValueError
    for fewer samples than clusters, non-finite samples or bad arguments.
    """
    if not torch.is_tensor(x) or x.dim() != 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"k-means needs a float tensor of samples (N, D), got {got}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least K={k} samples, got {x.shape[0]}")
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    x = x.detach().float().contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("k-means samples contain NaN or infinite values")
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    centres = _kmeans_plusplus(x, k, generator)
    tol = tol * float(x.var(dim=0, unbiased=False).mean())
    labels_old = None
    converged = False
    n_iter = 0
    while n_iter < iters:
        n_iter += 1
        labels, dist = _nearest(x, centres)
        new = _mean_per_cluster(x, labels, dist, centres)
        shift = float((new - centres).pow(2).sum())
        centres = new
        if labels_old is not None and torch.equal(labels, labels_old):
            converged = True  # the centres are the means of their clusters: labels hold
            break
        if shift <= tol:
            break
        labels_old = labels
    if not converged:  # labels that match the final centres
        labels, _ = _nearest(x, centres)
    return KMeansResult(centres, labels, _inertia(x, centres, labels), n_iter)


def _rows(n: int, k: int):
    step = max(1, _BLOCK // max(1, k))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centre (N,) int64 and squared distance to it (N,) float32."""
    c2 = centres.pow(2).sum(1)
    labels = torch.empty(len(x), dtype=torch.long, device=x.device)
    dist = torch.empty(len(x), device=x.device)
    for s in _rows(len(x), len(centres)):
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change which c is nearest
        d = torch.addmm(c2, x[s], centres.t(), alpha=-2.0)
        m, labels[s] = d.min(1)
        dist[s] = (m + x[s].pow(2).sum(1)).clamp_min_(0)
    return labels, dist


def _sq_dist_to(points: torch.Tensor, xt: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Squared distances (P, N) from a few points (P, D) to every sample (xt: the samples
    transposed (D, N), contiguous: ~1.5x faster on CPU than a transposed view; x2: |x|^2)."""
    d = torch.addmm(x2, points, xt, alpha=-2.0)
    return d.add_(points.pow(2).sum(1, keepdim=True)).clamp_min_(0)


def _kmeans_plusplus(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """sklearn's greedy k-means++: each new centre is the best of 2 + ln k candidates drawn
    with probability proportional to the squared distance to the centres so far."""
    n = len(x)
    trials = 2 + int(math.log(k))
    centres = torch.empty(k, x.shape[1], device=x.device)
    first = torch.randint(n, (1,), generator=g, device=x.device)
    centres[0] = x[first[0]]
    x2, xt = x.pow(2).sum(1), x.t().contiguous()
    closest = _sq_dist_to(x[first], xt, x2)[0]
    for c in range(1, k):
        # float64 running sum: 50k float32 terms would lose the small ones
        cum = closest.double().cumsum(0)
        r = torch.rand(trials, generator=g, device=x.device, dtype=torch.float64) * cum[-1]
        cand = torch.searchsorted(cum, r).clamp_(max=n - 1)
        pot = torch.minimum(closest, _sq_dist_to(x[cand], xt, x2))  # (trials, N)
        best = pot.sum(1).argmin()
        closest = pot[best]
        centres[c] = x[cand[best]]
    return centres


def _mean_per_cluster(
    x: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """New centres: the mean of each cluster. An empty cluster takes the sample farthest
    from its centre (the farthest ones, for several), as sklearn does."""
    k = len(centres)
    counts = torch.bincount(labels, minlength=k).float()
    sums = _sum_per_cluster(x, labels, k)
    empty = (counts == 0).nonzero()[:, 0]
    if len(empty):
        far = dist.topk(len(empty)).indices
        sums.index_add_(0, labels[far], -x[far])
        counts.index_add_(0, labels[far], -torch.ones(len(far), device=x.device))
        sums[empty] = x[far]
        counts[empty] = 1.0
    # a cluster whose only sample moved keeps its centre
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)


def _sum_per_cluster(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    if x.device.type == "cpu":
        return torch.zeros(k, x.shape[1]).index_add_(0, labels, x)  # deterministic on CPU
    # index_add_ uses atomics on GPUs (sums in a varying order); a one-hot product does not
    sums = torch.zeros(k, x.shape[1], device=x.device)
    for s in _rows(len(x), k):
        one_hot = torch.nn.functional.one_hot(labels[s], k).float()
        sums.addmm_(one_hot.t(), x[s])
    return sums


def _inertia(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of squared distances, from the differences (exact, unlike |x|^2 - 2x.c + |c|^2)."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for s in _rows(len(x), len(centres)):
        total += (x[s] - centres[labels[s]]).pow(2).sum(dtype=torch.float64)
    return float(total)
