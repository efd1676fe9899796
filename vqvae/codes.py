"""Questions about single codes of a trained model: which codes are nearest, how often each
is used. For the app's code picker and anyone inspecting a codebook."""

from __future__ import annotations

import torch

from .parallel import check_workers, thread_map


@torch.no_grad()
def nearest_codes(model, index: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` codes closest to code ``index`` in embedding space (Euclidean), itself
    excluded: (indices (n,) int64, distances (n,) float32), nearest first."""
    cb = model.codebook.detach().float().cpu()
    K = len(cb)
    if not 0 <= index < K:
        raise ValueError(f"code index must be in [0, {K - 1}], got {index}")
    d = torch.cdist(cb[index : index + 1], cb)[0]
    d[index] = float("inf")
    n = min(n, K - 1)
    dist, idx = torch.topk(d, n, largest=False)
    return idx, dist


def usage_ranks(usage) -> torch.Tensor:
    """Rank (K,) int64 of each code by usage count, 1 = most used; ties keep index order."""
    u = torch.as_tensor(usage).long()
    order = torch.argsort(-u, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(1, len(u) + 1)
    return ranks


@torch.no_grad()
def latent_distances(
    model,
    z_e: torch.Tensor,
    codes: torch.Tensor,
    n: int = 5,
    *,
    chunk: int = 4096,
    workers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Why each cell got its code: the ``n`` codes nearest to each latent of ``z_e``
    (B, D, h, w) (the encoder's output, as ``VQVAE.encode_image(..., return_latents=True)``
    gives it) and their Euclidean distances, the chosen code (``codes`` (B, h, w)) first,
    then the others nearest first. Returns (indices (B, h, w, n) int64, distances
    (B, h, w, n) float32). Computed ``chunk`` latents at a time, so memory stays at
    ``chunk`` x K distances whatever the image size (8 MB for K = 512; for a 1 MP photo's
    65,536 cells, one thread, 2048 to 16,384 a chunk took 0.26-0.27 s, on two workers 0.14 s
    in chunks of 2048 and 4096, 0.22 s in 16,384), ``workers`` chunks at once
    (:mod:`vqvae.parallel`; the chunks made smaller where the latents would not fill them all).

    The chosen code is put first even where float rounding would rank a near tie otherwise:
    the grid's code is the one the quantizer picked."""
    cb = model.codebook.detach().float().cpu()
    K = len(cb)
    n = min(int(n), K)
    b, d, h, w = z_e.shape
    flat = z_e.detach().float().cpu().permute(0, 2, 3, 1).reshape(-1, d)
    chosen = torch.as_tensor(codes).reshape(-1).long().cpu()
    if len(chosen) != len(flat):
        raise ValueError(f"codes {tuple(codes.shape)} do not match latents {tuple(z_e.shape)}")
    norms = cb.pow(2).sum(1)
    idx = torch.empty(len(flat), n, dtype=torch.long)
    dist = torch.empty(len(flat), n)
    chunk = max(1, min(int(chunk), -(-len(flat) // check_workers(workers))))

    def nearest(a: int) -> None:  # the chunk of latents from a: its own rows of idx, dist
        z, rows = flat[a : a + chunk], slice(a, a + chunk)
        # ||e||^2 - 2 z.e ranks the codes of a latent as ||z - e||^2 does (one matmul, no
        # square roots over all K); the chosen code is forced first
        rank = torch.addmm(norms, z, cb.t(), alpha=-2.0)
        rank[torch.arange(len(rank)), chosen[rows]] = -float("inf")
        top = torch.topk(rank, n, largest=False).indices
        near = (z[:, None, :] - cb[top]).norm(dim=-1)  # exact, for the n kept only
        near[:, 1:], order = near[:, 1:].sort(dim=1)  # near ties: in exact order
        top[:, 1:] = top[:, 1:].gather(1, order)
        idx[rows], dist[rows] = top, near

    for _ in thread_map(nearest, range(0, len(flat), chunk), workers):
        pass
    return idx.view(b, h, w, n), dist.view(b, h, w, n)
