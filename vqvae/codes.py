"""Questions about single codes of a trained model: which codes are nearest, how often each
is used. For the app's code picker and anyone inspecting a codebook."""

from __future__ import annotations

import torch


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
