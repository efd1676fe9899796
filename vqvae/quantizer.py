"""Vector quantizer with straight-through gradients, EMA codebook, k-means init and
dead-code restarts. Every trick is a flag; defaults follow the VQ-VAE paper."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src=src)
    return t


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (N_r, D) tensors from every rank (N_r may differ between ranks)."""
    if not _distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes), x.shape[1]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes, strict=False)])


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, h, w) straight-through quantized latents
    indices: torch.Tensor  # (B, h, w) int64
    codebook_loss: torch.Tensor  # scalar, 0 under EMA
    commitment_loss: torch.Tensor  # scalar, already multiplied by beta
    perplexity: torch.Tensor  # scalar, over this batch (all ranks when distributed)
    codes_used: torch.Tensor  # scalar int, distinct codes in this batch (all ranks)


class VectorQuantizer(nn.Module):
    """Maps continuous latents ``z_e`` of shape (B, D, h, w) to their nearest codebook vectors.

    Args:
        codebook_size: K, the number of code vectors.
        dim: D, the size of each code vector.
        beta: commitment cost (paper: 0.25).
        use_ema: update the codebook by exponential moving averages of the assigned
            encoder outputs (paper appendix) instead of by the codebook loss.
        decay: EMA decay (0.99).
        eps: Laplace smoothing of the EMA cluster sizes.
        dead_code_threshold: codes not chosen for this many training steps are re-seeded
            from the current batch's encoder outputs; 0 turns restarts off.

    The quantizer always computes in fp32, also under autocast. When ``torch.distributed``
    is initialised, EMA statistics, k-means init and restarts are synchronised so every
    rank holds the same codebook.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        beta: float = 0.25,
        use_ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: int = 0,
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.use_ema = use_ema
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold

        # Sonnet-style uniform init; k-means init replaces it when training asks for it.
        bound = (3.0 / dim) ** 0.5
        self.embedding = nn.Parameter(
            torch.empty(codebook_size, dim).uniform_(-bound, bound), requires_grad=not use_ema
        )
        # EMA state: hidden (not yet de-biased) averages, and how many updates went in.
        self.register_buffer("ema_cluster_size", torch.zeros(codebook_size))
        self.register_buffer("ema_embed_sum", torch.zeros(codebook_size, dim))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.float64))
        # Steps since each code was last chosen in training (for restarts).
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.embedding

    def extra_repr(self) -> str:
        return (
            f"K={self.codebook_size}, D={self.dim}, beta={self.beta}, ema={self.use_ema}, "
            f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}"
        )

    # -- nearest neighbour ---------------------------------------------------------------
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Indices (N,) of the nearest code for each row of ``flat`` (N, D), squared L2 in
        its matrix-product form ||z||^2 - 2 z.e + ||e||^2."""
        e = self.embedding.float()
        d = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.t() + e.pow(2).sum(1)[None, :]
        return d.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``indices`` (B, h, w) as latents (B, D, h, w)."""
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2).contiguous()

    # -- forward -------------------------------------------------------------------------
    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        if z_e.dim() != 4 or z_e.shape[1] != self.dim:
            raise ValueError(
                f"expected latents of shape (B, {self.dim}, h, w), got {tuple(z_e.shape)}"
            )
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()
            b, d, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            idx = self.nearest(flat)
            counts = torch.bincount(idx, minlength=self.codebook_size).float()

            if self.training:
                counts = _all_reduce_sum(counts)  # every rank sees the global usage
                if self.use_ema:
                    self._ema_update(flat, idx, counts)
                if self.dead_code_threshold > 0:
                    self._restart_dead_codes(flat, counts)

            q = self.lookup(idx.view(b, h, w)).float()
            commitment = self.beta * F.mse_loss(z, q.detach())
            if self.use_ema:
                codebook_loss = z.new_zeros(())
            else:
                codebook_loss = F.mse_loss(q, z.detach())
            # straight-through: value exactly q, identity gradient to the encoder (z - sg[z] == 0)
            q_st = q.detach() + (z - z.detach())

            p = counts / counts.sum().clamp_min(1)
            perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
            codes_used = (counts > 0).sum()
        return QuantizerOutput(
            q_st, idx.view(b, h, w), codebook_loss, commitment, perplexity, codes_used
        )

    # -- EMA -----------------------------------------------------------------------------
    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        embed_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, flat)
        embed_sum = _all_reduce_sum(embed_sum)
        self.ema_cluster_size.lerp_(counts, 1.0 - self.decay)
        self.ema_embed_sum.lerp_(embed_sum, 1.0 - self.decay)
        self.ema_updates += 1
        # De-bias early steps like sonnet's ExponentialMovingAverage: hidden / (1 - decay^t).
        debias = 1.0 - self.decay ** float(self.ema_updates)
        cluster = self.ema_cluster_size / debias
        n = cluster.sum()
        cluster = (cluster + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace
        self.embedding.data.copy_(self.ema_embed_sum / debias / cluster[:, None])

    # -- codebook initialisation and restarts --------------------------------------------
    @torch.no_grad()
    def set_codebook(self, vectors: torch.Tensor, cluster_size: torch.Tensor | None = None) -> None:
        """Replace the codebook with ``vectors`` (K, D) and make the EMA state agree with it,
        as if it had a long history (so the first EMA steps do not wipe it out)."""
        vectors = vectors.to(self.embedding.device, torch.float32)
        if vectors.shape != self.embedding.shape:
            raise ValueError(
                f"expected codebook of shape {tuple(self.embedding.shape)}, "
                f"got {tuple(vectors.shape)}"
            )
        if cluster_size is None:
            cluster_size = torch.ones(self.codebook_size, device=vectors.device)
        cluster_size = cluster_size.to(vectors.device, torch.float32).clamp_min(1e-3)
        vectors = _broadcast(vectors.contiguous())
        cluster_size = _broadcast(cluster_size.contiguous())
        self.embedding.data.copy_(vectors)
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_embed_sum.copy_(vectors * cluster_size[:, None])
        # decay^ema_updates ~ 0: the hidden averages are already de-biased values.
        self.ema_updates.fill_(1e4)
        self.steps_unused.zero_()

    @torch.no_grad()
    def init_kmeans(self, samples: torch.Tensor, *, iters: int = 50, seed: int = 0) -> torch.Tensor:
        """Initialise the codebook by k-means (scikit-learn's KMeans, k-means++ seeding) on
        encoder outputs ``samples`` of shape (N, D) or (B, D, h, w). Samples are gathered from
        every rank and the result is computed on rank 0 and broadcast. Returns the
        inertia-per-sample as a float tensor."""
        from sklearn.cluster import KMeans

        if samples.dim() == 4:
            samples = samples.permute(0, 2, 3, 1).reshape(-1, samples.shape[1])
        samples = _all_gather_rows(samples.detach().float())
        if samples.shape[0] < self.codebook_size:
            raise ValueError(
                f"k-means needs at least K={self.codebook_size} samples, got {samples.shape[0]}"
            )
        rank0 = not _distributed() or dist.get_rank() == 0
        centres = torch.zeros_like(self.embedding, dtype=torch.float32)
        sizes = torch.zeros(self.codebook_size, device=self.embedding.device)
        inertia = torch.zeros((), device=self.embedding.device)
        if rank0:
            x = samples.cpu().numpy()
            km = KMeans(self.codebook_size, n_init=1, max_iter=iters, random_state=seed).fit(x)
            centres.copy_(torch.from_numpy(km.cluster_centers_).float())
            sizes.copy_(
                torch.bincount(
                    torch.from_numpy(km.labels_).long(), minlength=self.codebook_size
                ).float()
            )
            inertia.fill_(float(km.inertia_) / x.shape[0])
        # Scale cluster sizes to a mean of 1: the init then counts for about as much as one
        # sample per code, and the EMA soon follows the real statistics.
        self.set_codebook(centres, sizes / max(1.0, sizes.sum().item()) * self.codebook_size)
        return _broadcast(inertia)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = self.steps_unused >= self.dead_code_threshold
        n_dead = int(dead.sum())  # identical on all ranks: counts were all-reduced
        if n_dead == 0:
            return
        # Re-seed from this batch's encoder outputs; rank 0 picks, everyone copies.
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        new = _broadcast(flat[pick].contiguous())
        self.embedding.data[dead] = new
        if self.use_ema:
            # one sample's worth of mass so the EMA keeps the new code where it was put
            scale = 1.0 - self.decay ** float(self.ema_updates)
            self.ema_cluster_size[dead] = scale
            self.ema_embed_sum[dead] = new * scale
        self.steps_unused[dead] = 0
