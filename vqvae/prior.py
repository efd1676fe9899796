"""A learned prior over a VQ-VAE's code grids: sample new images, complete or resample part
of a grid, and measure how surprising each code is.

:class:`CodePrior` is an autoregressive transformer over the h x w grid in raster order
(row by row, left to right): token embeddings plus 2-D position embeddings, pre-norm blocks,
causal self-attention with ``torch.nn.functional.scaled_dot_product_attention``. It is
optionally class-conditional: the sequence starts with a class token, and a learned *null*
class (labels dropped during training) lets one prior sample with or without a class and use
classifier-free guidance.

>>> import vqvae
>>> model = vqvae.load_pretrained("mnist")
>>> prior = vqvae.load_prior("mnist")                  # pretrained/mnist/prior.*
>>> prior.check_compatible(model)
>>> codes = prior.sample(16, labels=3, temperature=1.0) # (16, 7, 7) int64 in [0, K)
>>> images = model.decode(codes)                        # (16, 1, 28, 28) in [0, 1]
>>> prior.nll_bits(model.encode(images))               # (16,) bits per image

The prior belongs to one VQ-VAE: its config names the codebook size K, the grid h x w and a
fingerprint of the codebook, and :meth:`CodePrior.check_compatible` refuses another model.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import hub
from .base import PretrainedMixin
from .config import PRIOR_FORMAT_VERSION, PriorConfig, codebook_fingerprint

PRIOR_WEIGHTS = "prior.safetensors"
PRIOR_CONFIG = "prior.json"
FORMAT_VERSION = PRIOR_FORMAT_VERSION
MAX_SAMPLES = 1024  # the most grids one sample()/complete() call draws


@dataclass
class PriorState:
    """Where a step-by-step pass over the grid stands (see :meth:`CodePrior.start`).

    ``probs`` (n, K) float32 is the distribution of cell ``pos`` (raster index) given the
    label and the codes fed so far; None once all h*w codes are fed. ``codes`` (n, h*w)
    int64 holds the fed codes (cells at ``pos`` and after are 0)."""

    probs: torch.Tensor | None
    pos: int
    codes: torch.Tensor
    cache: list  # per layer (keys, values), each (rows, heads, h*w, head_dim)
    classes: torch.Tensor  # (rows,) class-token index; rows = 2n with guidance
    temperature: float
    top_k: int | None
    guidance: float


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, c: PriorConfig):
        super().__init__()
        self.n_heads, self.dropout = c.n_heads, c.dropout
        self.ln1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(c.d_model, c.mlp_ratio * c.d_model),
            nn.GELU(),
            nn.Linear(c.mlp_ratio * c.d_model, c.d_model),
        )
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, cache=None, pos: int = 0) -> torch.Tensor:
        """``x`` (B, T, d). Without ``cache``: a causal pass over the T positions. With
        ``cache`` (keys, values): T == 1, the token at ``pos`` attends to cached 0..pos."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        if cache is None:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            keys, values = cache
            keys[:, :, pos : pos + 1] = k
            values[:, :, pos : pos + 1] = v
            # one query attending to every cached position: no mask needed
            a = F.scaled_dot_product_attention(
                q, keys[:, :, : pos + 1], values[:, :, : pos + 1], dropout_p=p
            )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CodePrior(PretrainedMixin, nn.Module):
    """Autoregressive prior p(codes | class) over a VQ-VAE's (h, w) code grid.

    Position t of the sequence predicts cell t (raster order). Its input is the class token
    (t = 0) or the code of cell t-1, plus the row and column embeddings of cell t, so every
    position knows where it predicts. Class index ``num_classes`` is the learned null class
    (no label); an unconditional prior has only that one.

    Labels, wherever accepted: None (no class), an int for every grid, or an int tensor (B,)
    with values in [0, num_classes) or -1 for "no class" on that row.

    Saved as ``prior.safetensors`` + ``prior.json``, usually beside its VQ-VAE's files:
    :meth:`save_pretrained`, :meth:`from_pretrained` (or :func:`load_prior`, which also
    checks the pairing), :meth:`push_to_hub` (:class:`vqvae.base.PretrainedMixin`).
    """

    config_class = PriorConfig
    weights_name = PRIOR_WEIGHTS
    config_name = PRIOR_CONFIG
    what = "prior"
    config_what = "prior config"
    not_found_hint = " Train one with python -m train.prior."
    card_tags = ("autoregressive-prior", "transformer")

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.codebook_size, c.d_model)
        self.class_emb = nn.Embedding(c.num_classes + 1, c.d_model)  # last: null class
        self.row_emb = nn.Embedding(c.height, c.d_model)
        self.col_emb = nn.Embedding(c.width, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.codebook_size)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections down with depth
        for b in self.blocks:
            nn.init.normal_(b.proj.weight, std=0.02 / math.sqrt(2 * c.n_layers))
            nn.init.normal_(b.mlp[2].weight, std=0.02 / math.sqrt(2 * c.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # -- properties ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes the prior is conditioned on; 0 when unconditional."""
        return self.config.num_classes

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the code grids."""
        return self.config.height, self.config.width

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- input checks --------------------------------------------------------------------
    def _check_codes(self, codes) -> torch.Tensor:
        h, w = self.grid
        if not torch.is_tensor(codes) or codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"codes must be an integer tensor of shape (B, {h}, {w})")
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (h, w):
            raise ValueError(
                f"codes must have shape (B, {h}, {w}) for this prior, got {tuple(codes.shape)}"
            )
        K = self.codebook_size
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= K):
            raise ValueError(
                f"codes must be in [0, {K - 1}], got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.to(self.device, torch.long)

    def _class_index(self, labels, n: int) -> torch.Tensor:
        """(n,) class-token indices from ``labels`` (see the class docstring)."""
        null = self.num_classes
        if labels is None:
            return torch.full((n,), null, dtype=torch.long, device=self.device)
        if self.num_classes == 0:
            raise ValueError("this prior is unconditional: pass labels=None")
        if isinstance(labels, bool) or not (
            isinstance(labels, numbers.Integral)
            or torch.is_tensor(labels)
            or hasattr(labels, "__len__")
        ):
            raise TypeError(f"labels must be None, an int or a sequence of ints, got {labels!r}")
        t = torch.as_tensor(labels)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"labels must be one int or have shape ({n},), got {tuple(t.shape)}")
        t = t.to(self.device, torch.long)
        if n and (int(t.min()) < -1 or int(t.max()) >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes - 1}] (or -1 for no class), got "
                f"values in [{int(t.min())}, {int(t.max())}]"
            )
        return torch.where(t < 0, torch.full_like(t, null), t)

    def _check_options(self, temperature, top_k, guidance) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and (
            isinstance(top_k, bool)
            or not isinstance(top_k, int)
            or not 1 <= top_k <= self.codebook_size
        ):
            raise ValueError(f"top_k must be None or an int in [1, {self.codebook_size}], "
                             f"got {top_k!r}")  # fmt: skip
        if not (isinstance(guidance, (int, float)) and math.isfinite(guidance)) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")

    @staticmethod
    def _check_n(n) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {n!r}")
        if not 1 <= n <= MAX_SAMPLES:
            raise ValueError(f"n must be in [1, {MAX_SAMPLES}], got {n}")
        return n

    # -- the network ---------------------------------------------------------------------
    def _pos_emb(self) -> torch.Tensor:
        """(h*w, d): row + column embedding of each cell in raster order."""
        h, w = self.grid
        return (self.row_emb.weight[:, None, :] + self.col_emb.weight[None, :, :]).reshape(
            h * w, -1
        )

    def _inputs(self, codes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, h*w, d) inputs: [class, code_0 .. code_{L-2}] + position of the predicted cell."""
        flat = codes.reshape(len(codes), -1)
        x = torch.cat([self.class_emb(classes)[:, None], self.tok_emb(flat[:, :-1])], dim=1)
        return self.drop(x + self._pos_emb())

    def forward(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        """Next-code logits (B, h*w, K): position t scores cell t given the label and cells
        before it. ``codes`` (B, h, w) int64 in [0, K); labels as in the class docstring."""
        codes = self._check_codes(codes)
        x = self._inputs(codes, self._class_index(labels, len(codes)))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))

    def loss(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        """Mean cross-entropy (nats per code) of ``codes`` under the prior, in float32."""
        logits = self(codes, labels)
        target = codes.to(self.device, torch.long).flatten()
        return F.cross_entropy(logits.float().flatten(0, 1), target)

    @torch.no_grad()
    def code_bits(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        """Bits (B, h, w) float32 of each code given the label and the codes before it in
        raster order: -log2 p(code_t | code_<t, label). Its sum is :meth:`nll_bits`."""
        logits = self(codes, labels).float()
        logp = torch.log_softmax(logits, dim=-1)
        flat = codes.to(self.device, torch.long).reshape(len(codes), -1, 1)
        bits = -logp.gather(-1, flat)[..., 0] / math.log(2)
        return bits.view(codes.shape)

    @torch.no_grad()
    def nll_bits(self, codes: torch.Tensor, labels=None) -> torch.Tensor:
        """Bits (B,) float32 per grid under the prior: -log2 p(codes | label)."""
        return self.code_bits(codes, labels).sum((1, 2))

    # -- step by step (key/value cache) --------------------------------------------------
    def _probs(self, logits: torch.Tensor, state: PriorState) -> torch.Tensor:
        """(n, K) distribution from the last position's logits (rows, K): float32, or
        float64 for a float64 prior (the codec's)."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        n = len(state.codes)
        if len(logits) != n:  # classifier-free guidance: conditional rows, then null rows
            cond, null = logits[:n], logits[n:]
            logits = null + state.guidance * (cond - null)
        logits = logits / state.temperature
        if state.top_k is not None and state.top_k < logits.shape[-1]:
            kth = torch.topk(logits, state.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def _run_position(self, state: PriorState, token: torch.Tensor) -> torch.Tensor:
        """Feed input embeddings (rows, d) at position ``state.pos``; logits (rows, K)."""
        x = (token + self._pos_emb()[state.pos])[:, None]
        for b, cache in zip(self.blocks, state.cache, strict=True):
            x = b(x, cache=cache, pos=state.pos)
        return self.head(self.ln_f(x))[:, 0]

    @torch.no_grad()
    def start(
        self,
        labels=None,
        n: int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float = 1.0,
    ) -> PriorState:
        """Begin a step-by-step pass over ``n`` grids (default: len(labels), or 1).

        Returns a :class:`PriorState` whose ``probs`` (n, K) is the distribution of cell 0;
        feed codes with :meth:`step`. With the defaults the probabilities are the prior's own
        (what :meth:`code_bits` measures, equal up to float rounding). The pass is
        deterministic: the same inputs, ``n``, device and torch build give bit-identical
        probabilities, so an entropy coder and decoder that both drive it agree (run both on
        the CPU with the same ``n``; torch does not promise equal bits across CPUs, which is
        why vqvae.codec runs a float64 copy and rounds its probabilities).
        ``guidance`` g != 1 with labels mixes logits as null + g * (cond - null)
        (classifier-free guidance; it has no effect without labels)."""
        self._check_options(temperature, top_k, guidance)
        if n is None:
            n = 1 if labels is None or torch.as_tensor(labels).dim() == 0 else len(labels)
        n = self._check_n(n)
        classes = self._class_index(labels, n)
        if guidance != 1.0 and bool((classes != self.num_classes).any()):
            classes = torch.cat([classes, torch.full_like(classes, self.num_classes)])
        c = self.config
        shape = (len(classes), c.n_heads, c.seq_len, c.d_model // c.n_heads)
        dtype = self.head.weight.dtype
        cache = [
            (torch.zeros(shape, device=self.device, dtype=dtype),
             torch.zeros(shape, device=self.device, dtype=dtype))
            for _ in self.blocks
        ]  # fmt: skip
        state = PriorState(
            probs=None,
            pos=0,
            codes=torch.zeros(n, c.seq_len, dtype=torch.long, device=self.device),
            cache=cache,
            classes=classes,
            temperature=float(temperature),
            top_k=top_k,
            guidance=float(guidance),
        )
        state.probs = self._probs(self._run_position(state, self.class_emb(classes)), state)
        return state

    @torch.no_grad()
    def step(self, state: PriorState, codes) -> torch.Tensor | None:
        """Feed the codes (n,) of cell ``state.pos`` and advance (``state`` is updated in
        place). Returns the new ``state.probs``: the distribution (n, K) of the next cell,
        or None after the last cell."""
        if state.probs is None:
            raise ValueError("the pass is complete: all h*w codes were fed")
        n = len(state.codes)
        t = torch.as_tensor(codes, device=self.device)
        if t.is_floating_point() or t.dim() > 1:
            raise TypeError(f"codes must be an int or an integer tensor of shape ({n},)")
        t = t.long().expand(n) if t.dim() == 0 else t.long()
        if t.shape != (n,):
            raise ValueError(f"codes must have shape ({n},), got {tuple(t.shape)}")
        if int(t.min()) < 0 or int(t.max()) >= self.codebook_size:
            raise ValueError(f"codes must be in [0, {self.codebook_size - 1}]")
        state.codes[:, state.pos] = t
        state.pos += 1
        if state.pos == self.config.seq_len:
            state.probs = None
            return None
        rows = t.repeat(len(state.classes) // n)  # the same codes for the null rows
        state.probs = self._probs(self._run_position(state, self.tok_emb(rows)), state)
        return state.probs

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels=None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` (1..1024) code grids: int64 (n, h, w) in [0, K), on the prior's device.

        ``temperature`` > 0 divides the logits (below 1: safer, less varied); ``top_k``
        keeps the k most likely codes of each cell; ``guidance`` (classifier-free, with
        labels) sharpens the class; ``generator`` (on the prior's device) makes it
        reproducible. Costs h*w single-token steps with a key/value cache."""
        n = self._check_n(n)
        keep = torch.zeros(n, *self.grid, dtype=torch.bool, device=self.device)
        codes = torch.zeros(n, *self.grid, dtype=torch.long, device=self.device)
        return self._fill(codes, keep, labels, temperature, top_k, guidance, generator)

    @torch.no_grad()
    def complete(
        self,
        codes: torch.Tensor,
        keep,
        labels=None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Resample the cells of ``codes`` (B, h, w) where ``keep`` (bool, (h, w) or
        (B, h, w)) is False; kept cells come back unchanged. Returns int64 (B, h, w).

        Cells are drawn in raster order, each given every cell before it (rows above, cells
        to its left): the kept ones and those already resampled. Kept cells *after* a
        resampled one (to its right, in rows below) cannot influence it: the prior is
        autoregressive, so a resampled region follows the image above and left of it, and
        may not blend with what is kept below it. Options as in :meth:`sample`."""
        codes = self._check_codes(codes)
        self._check_n(len(codes))
        keep = torch.as_tensor(keep, device=self.device)
        if keep.dtype != torch.bool:
            raise TypeError(f"keep must be a bool tensor, got dtype {keep.dtype}")
        h, w = self.grid
        if keep.shape == (h, w):
            keep = keep.expand(len(codes), h, w)
        if keep.shape != codes.shape:
            raise ValueError(
                f"keep must have shape ({h}, {w}) or {tuple(codes.shape)}, got {tuple(keep.shape)}"
            )
        return self._fill(codes, keep, labels, temperature, top_k, guidance, generator)

    def _fill(self, codes, keep, labels, temperature, top_k, guidance, generator):
        n = len(codes)
        state = self.start(labels, n, temperature=temperature, top_k=top_k, guidance=guidance)
        flat_codes, flat_keep = codes.reshape(n, -1), keep.reshape(n, -1)
        for t in range(self.config.seq_len):
            if bool(flat_keep[:, t].all()):
                chosen = flat_codes[:, t]
            else:
                drawn = torch.multinomial(state.probs, 1, generator=generator)[:, 0]
                chosen = torch.where(flat_keep[:, t], flat_codes[:, t], drawn)
            self.step(state, chosen)
        return state.codes.view(n, *self.grid).clone()

    # -- files ---------------------------------------------------------------------------
    def check_compatible(self, model) -> None:
        """Raise ValueError unless ``model`` (a VQVAE) is the one this prior was trained on:
        same codebook size, code grid and codebook fingerprint."""
        c, m = self.config, model.config
        name = f"{c.vqvae_name!r}" if c.vqvae_name else "another model"
        problems = []
        if m.codebook_size != c.codebook_size:
            problems.append(f"K = {m.codebook_size}, the prior's K = {c.codebook_size}")
        if (m.latent_size, m.latent_size) != (c.height, c.width):
            problems.append(
                f"codes are {m.latent_size}x{m.latent_size}, the prior's {c.height}x{c.width}"
            )
        if (
            not problems
            and c.vqvae_fingerprint
            and codebook_fingerprint(model) != (c.vqvae_fingerprint)
        ):
            problems.append("its codebook differs (fingerprint mismatch)")
        if problems:
            raise ValueError(
                f"this prior belongs to {name}, not to the model {m.name!r}: " + "; ".join(problems)
            )

    def _card_dataset_name(self) -> str:
        return self.config.vqvae_name

    def _card_body(self, repo_id: str) -> str:
        c = self.config
        labels = f"{c.num_classes} classes" if c.num_classes else "unconditional"
        return (
            f"# Code prior for the VQ-VAE `{c.vqvae_name or 'unnamed'}`\n\n"
            f"An autoregressive transformer ({c.n_layers} layers, d_model {c.d_model}, "
            f"{labels}) over the VQ-VAE's {c.height}x{c.width} code grids of "
            f"{c.codebook_size} codes, for the `vqvae` library: it samples new images and "
            "measures how surprising each code is.\n\n"
            "```python\nimport vqvae\n\n"
            f'model = vqvae.VQVAE.from_pretrained("{repo_id}")  # the VQ-VAE, when it shares '
            "the repo\n"
            f'prior = vqvae.load_prior("{repo_id}", model=model)\n'
            f"codes = prior.sample(16)  # (16, {c.height}, {c.width}) int64\n"
            "images = model.decode(codes)\n```\n"
        )


def resolve_prior(source, **hub_options) -> Path:
    """The folder holding ``prior.json`` + ``prior.safetensors`` for ``source`` (a folder,
    a shipped model's name or a Hub repo id: :func:`vqvae.hub.resolve`). Raises
    FileNotFoundError saying which shipped models have one."""
    return hub.resolve(
        source,
        (PRIOR_WEIGHTS, PRIOR_CONFIG),
        what="prior",
        hint=CodePrior.not_found_hint,
        **hub_options,
    )


def load_prior(
    source,
    device="cpu",
    model=None,
    *,
    revision: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
) -> CodePrior:
    """Load a prior written by :meth:`CodePrior.save_pretrained` from ``source``: a folder,
    the name of a shipped model (``"mnist"``) or a Hugging Face Hub repo id (``"org/name"``;
    ``revision``, ``cache_dir``, ``local_files_only`` as in :meth:`CodePrior.from_pretrained`).
    In eval mode on ``device``. With ``model`` (a VQVAE), also
    :meth:`CodePrior.check_compatible` it (ValueError for a prior of another model)."""
    prior = CodePrior.from_pretrained(
        source,
        device,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    if model is not None:
        prior.check_compatible(model)
    return prior
