"""A prior for code grids of any size, coded in a few parallel passes, with integer-exact
probabilities: the entropy model of the photo codec (:mod:`vqvae.codec`, format 3).

Why this design:

- **Any size, few passes.** A raster prior (:class:`vqvae.CodePrior`) takes one step per
  cell: 16,384 sequential steps for a 512 x 512 photo, and positions it never saw. Here a
  small convolutional network predicts every cell of a *pass* at once from the cells
  decoded in earlier passes, so an h x w grid costs a fixed number of network runs
  whatever its size, and convolutions know no absolute position. Stage 1 (the first
  quantizer stage) uses a 4 x 4 schedule: cells (0, 0) mod 4 first (1/16 of the grid, no
  context), then (2, 2), then (0, 2) and (2, 0), then the odd-odd cells, then the rest, so
  15/16 of the cells see decoded neighbours on two or four sides. Stage s >= 2 of a residual
  quantizer sees every code of the stages before it at every cell, which says most of what
  there is to say, so a checkerboard (two passes) is enough. ``pass_map`` gives a cell's pass.
- **Causality** is by construction: the network's input holds a stage's codes only where
  ``pass_map`` is below the current pass (and all codes of earlier stages), so no code's
  distribution depends on a code decoded after it (tested by perturbing later cells).
- **Integer-exact probabilities.** Encoder and decoder must compute the same counts to the
  bit, on any machine and any number of threads. After training, :meth:`GridPrior.freeze`
  turns the network into integers: int8 embeddings and weights, activations integers in
  [0, 127]. A convolution of such integers has every product and partial sum below 2^24,
  so float32 arithmetic computes it exactly in any summation order and any blocking (the
  channel bound in :class:`GridPriorConfig` keeps it so). Each layer's output is
  requantized as floor(acc * scale + offset) clamped to [0, 127]: one float32
  multiplication and one addition, each correctly rounded by IEEE 754, so every machine
  gets the same integers. The softmax is a table of 2^16 exp(-i/16) (computed with
  :mod:`decimal`) indexed by integer logit differences. The encoder may
  therefore batch every pass into one run and the decoder step pass by pass, with
  identical counts (tested on thousands of grids), using every thread.

Codes: int64 (B, S, h, w), stage s of a residual quantizer in ``codes[:, s]`` (S = 1 for a
plain VQ-VAE).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, getcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import grid
from .base import PretrainedMixin
from .config import MAX_NAME, check_bounds, check_field_types, config_from_dict, hash_weights

GRID_PRIOR_WEIGHTS = "grid_prior.safetensors"
GRID_PRIOR_CONFIG = "grid_prior.json"
GRID_PRIOR_FORMAT_VERSION = 1

ACT_MAX = 127  # activations of the integer network are integers in [0, ACT_MAX]
W_MAX = 127  # weights and embeddings are integers in [-W_MAX, W_MAX]
EXACT = 2**24  # float32 adds integers exactly below this
LOGIT_UNIT = 16  # integer logits count 1/16 nat
COUNT_BITS = 16  # the largest count: 2^16 (the most likely code)

# the passes of a stage: a tile of pass indices repeated over the grid
STAGE1_TILE = ((0, 4, 2, 4), (4, 3, 4, 3), (2, 4, 1, 4), (4, 3, 4, 3))
LATER_TILE = ((0, 1), (1, 0))


def _exp_table() -> np.ndarray:
    """round(2^16 exp(-i / LOGIT_UNIT)) for i = 0.. until it reaches 1, at least 1: computed
    with decimal arithmetic, so every machine has the same integers."""
    getcontext().prec = 40
    out, i = [], 0
    while True:
        v = int((Decimal(2**COUNT_BITS) * (Decimal(-i) / LOGIT_UNIT).exp()).to_integral_value())
        out.append(max(1, v))
        if v <= 1:
            return np.array(out, dtype=np.int64)
        i += 1


EXP_TABLE = _exp_table()
# the same counts as float64 (exact: below 2^53), the dtype constriction's models take
_EXP_COUNTS = EXP_TABLE.astype(np.float64)


@dataclass
class GridPriorConfig:
    """Everything needed to rebuild a :class:`GridPrior`, and the VQ-VAE it belongs to."""

    codebook_size: int  # K (every stage's)
    num_stages: int = 1  # stages of the VQ-VAE's residual quantizer it models
    embed_dim: int = 16  # E: a code's embedding, per stage
    channels: int = 48  # C: width of the network
    layers: int = 3  # 3 x 3 convolutions after the input one
    vqvae_fingerprint: str = ""  # stage_fingerprint(model); "" = not tied to a model
    vqvae_name: str = ""  # for messages only
    format_version: int = GRID_PRIOR_FORMAT_VERSION

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.format_version > GRID_PRIOR_FORMAT_VERSION:
            raise ValueError(
                f"grid prior format version {self.format_version} is newer than this "
                f"library reads ({GRID_PRIOR_FORMAT_VERSION}); update vqvae"
            )
        check_bounds(self, _BOUNDS)
        widest = max(self.in_channels, self.channels)
        if widest * 9 * ACT_MAX * W_MAX >= EXACT:  # see the module docstring
            raise ValueError(
                f"a {widest}-channel layer can exceed float32's exact integers: keep "
                "channels and embed_dim * num_stages + num_stages + 1 below 116"
            )
        if len(self.vqvae_name) > MAX_NAME or len(self.vqvae_fingerprint) > 64:
            raise ValueError(
                f"vqvae_name must be at most {MAX_NAME} characters and vqvae_fingerprint 64"
            )

    @property
    def in_channels(self) -> int:
        """Input channels: an embedding slot per stage, the known-cell mask, a stage one-hot."""
        return self.embed_dim * self.num_stages + 1 + self.num_stages

    @classmethod
    def for_model(cls, model, **kw) -> GridPriorConfig:
        """A config for priors over ``model``'s codes (K, stages and fingerprint filled in)."""
        c = model.config
        return cls(codebook_size=c.codebook_size, num_stages=c.num_stages,
                   vqvae_fingerprint=stage_fingerprint(model), vqvae_name=c.name, **kw)  # fmt: skip

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GridPriorConfig:
        """A config from a dict of fields, as ``grid_prior.json`` holds it; ValueError for a
        missing, unknown or bad field."""
        return config_from_dict(cls, d, "grid prior config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_BOUNDS = {
    "codebook_size": (2, 4096),
    "num_stages": (1, 16),
    "embed_dim": (1, 64),
    "channels": (1, 115),
    "layers": (1, 16),
}


def stage_fingerprint(model) -> str:
    """A short hex digest of every stage's codebook (float32 bytes) of a VQ-VAE: what a grid
    prior is tied to. For a one-stage model it equals :func:`vqvae.codebook_fingerprint`."""
    import hashlib

    h = hashlib.sha256()
    for vq in (model.quantizer, *model.residual):
        h.update(vq.codebook.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def encoding_fingerprint(model) -> str:
    """A short hex digest of what fixes a VQ-VAE's codes for an image: its encoder's weights
    and every stage's codebook (:func:`stage_fingerprint`). The key of the encoded-grid
    caches of the prior trainings: a model whose encoder was retrained with its codebooks
    frozen (``--freeze quantizer``) keeps its stage fingerprint, and so its priors, but
    codes images differently, and gets a fingerprint of its own here."""
    import hashlib

    h = hashlib.sha256(stage_fingerprint(model).encode())
    hash_weights(h, model.encoder.state_dict())
    return h.hexdigest()[:16]


def pass_map(h: int, w: int, stage: int) -> torch.Tensor:
    """(h, w) int64: the pass in which each cell of stage ``stage`` (0-based) is coded."""
    tile = torch.tensor(STAGE1_TILE if stage == 0 else LATER_TILE)
    m = tile.shape[0]
    return tile.repeat(math.ceil(h / m), math.ceil(w / m))[:h, :w].contiguous()


def num_passes(stage: int) -> int:
    """Passes of stage ``stage`` (0-based)."""
    return 5 if stage == 0 else 2


def schedule(stages: int) -> list[tuple[int, int]]:
    """(stage, pass) in coding order for the first ``stages`` stages."""
    return [(s, p) for s in range(stages) for p in range(num_passes(s))]


class GridPrior(PretrainedMixin, nn.Module):
    """p(codes) over code grids of any size, stage by stage, pass by pass (see the module
    docstring). Float for training (:meth:`loss`, :meth:`nll_bits`), integer for coding
    (:meth:`freeze`, then :meth:`counts`).

    Saved as ``grid_prior.safetensors`` + ``grid_prior.json`` (the frozen integer
    parameters included), usually beside its VQ-VAE's files."""

    config_class = GridPriorConfig
    weights_name = GRID_PRIOR_WEIGHTS
    config_name = GRID_PRIOR_CONFIG
    what = "grid prior"
    config_what = "grid prior config"
    not_found_hint = " Train one with python -m train.grid_prior."
    card_tags = ("entropy-model",)

    def __init__(self, config: GridPriorConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Parameter(torch.randn(c.num_stages, c.codebook_size, c.embed_dim) * 0.5)
        convs = [nn.Conv2d(c.in_channels, c.channels, 3, padding=1)]
        convs += [nn.Conv2d(c.channels, c.channels, 3, padding=1) for _ in range(c.layers)]
        self.convs = nn.ModuleList(convs)
        self.head = nn.Conv2d(c.channels, c.codebook_size, 1)
        # the integer network (freeze()); all zero until frozen
        n = len(convs) + 1
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("embed_int", torch.zeros(c.num_stages, c.codebook_size,
                                                      c.embed_dim, dtype=torch.int8))  # fmt: skip
        self.register_buffer("flag_int", torch.zeros((), dtype=torch.int64))
        for i, conv in enumerate([*convs, self.head]):
            self.register_buffer(f"w{i}", torch.zeros(conv.weight.shape, dtype=torch.int8))
            self.register_buffer(f"scale{i}", torch.zeros(conv.out_channels))
            self.register_buffer(f"off{i}", torch.zeros(conv.out_channels))
        self._n_layers = n

    # -- inputs --------------------------------------------------------------------------
    def _check(self, codes: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        c = self.config
        if not torch.is_tensor(codes) or codes.is_floating_point() or codes.dim() != 4:
            raise ValueError("codes must be an integer tensor of shape (B, S, h, w)")
        if codes.shape[1] > c.num_stages:
            raise ValueError(f"this prior models {c.num_stages} stage(s), got {codes.shape[1]}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= c.codebook_size):
            raise ValueError(f"codes must be in [0, {c.codebook_size - 1}]")
        if stage is not None and not 0 <= stage < codes.shape[1]:
            raise ValueError(f"stage {stage} is not among the {codes.shape[1]} stages given")
        return codes.long()

    def _visible(self, codes: torch.Tensor, stage: torch.Tensor, known: torch.Tensor):
        """(B, S, h, w) bool: which codes the network may read when stage ``stage`` (B,) is
        coded with its cells ``known`` (B, h, w) decoded: every cell of an earlier stage,
        the known cells of this one."""
        S = codes.shape[1]
        t = torch.arange(S, device=codes.device)[None, :, None, None]
        st = stage[:, None, None, None]
        return (t < st) | ((t == st) & known[:, None])

    def _input(self, table, codes, stage, known, flag):
        """The network's input (B, in_channels, h, w) from embedding table ``table`` (S, K,
        E), the codes, the stage being coded (B,) and its known cells (B, h, w); ``flag``
        is the value of the mask and stage channels. Built channels-last (the layout the
        convolutions run in); grids expanded from one (``counts``: one grid under every
        step's mask) are looked up once."""
        c = self.config
        B, S, h, w = codes.shape
        E, n_emb = c.embed_dim, c.num_stages * c.embed_dim
        one = codes[:1] if B > 1 and codes.stride(0) == 0 else codes
        emb = torch.stack([table[s][one[:, s]] for s in range(S)], 3)  # (b, h, w, S, E)
        vis = self._visible(codes, stage, known).permute(0, 2, 3, 1)[..., None]
        emb = (emb * vis.to(emb.dtype)).reshape(B, h, w, S * E)
        onehot = F.one_hot(stage, c.num_stages).to(emb.dtype) * flag
        x = torch.cat([
            emb,
            emb.new_zeros(B, h, w, n_emb - S * E),  # stages not given
            known[..., None].to(emb.dtype) * flag,
            onehot[:, None, None, :].expand(B, h, w, c.num_stages),
        ], -1)  # fmt: skip
        return x.permute(0, 3, 1, 2)  # (B, C, h, w), channels_last in memory

    # -- the float network (training) --------------------------------------------------------
    def logits(self, codes: torch.Tensor, stage: torch.Tensor, known: torch.Tensor):
        """Float logits (B, K, h, w) of stage ``stage`` (B,) given its ``known`` (B, h, w)
        cells and every code of earlier stages."""
        x = self._input(self.embed, codes, stage, known, 1.0)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.head(x)

    def loss(self, codes: torch.Tensor, generator: torch.Generator | None = None):
        """Training loss: for each grid a random stage and pass, the mean NLL (nats) of that
        pass's cells scaled to a per-cell figure of the stage (a pass's share of cells
        differs). ``codes`` (B, S, h, w) with S = num_stages."""
        B, S, h, w = codes.shape
        dev = codes.device
        stage = torch.randint(0, S, (B,), device=dev, generator=generator)
        maps = torch.stack([pass_map(h, w, s) for s in range(S)]).to(dev)[stage]  # (B, h, w)
        passes = torch.tensor([num_passes(s) for s in range(S)], device=dev)[stage]
        u = torch.rand(B, device=dev, generator=generator)
        p = (u * passes).long()
        known = maps < p[:, None, None]
        target = maps == p[:, None, None]
        tgt = codes.gather(1, stage[:, None, None, None].expand(B, 1, h, w))[:, 0]
        nll = F.cross_entropy(self.logits(codes, stage, known), tgt, reduction="none")
        return (nll * target).sum() / (h * w * B)

    @torch.no_grad()
    def nll_bits(self, codes: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """Bits (B,) of each grid's first ``stages`` stages (default: all given) under the
        float network; :meth:`counts`' files cost about the same for a frozen prior."""
        return self.stage_bits(codes, stages).sum(1)

    @torch.no_grad()
    def stage_bits(self, codes: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """Bits (B, stages) float64 of each of each grid's first ``stages`` stages (default:
        all given), each given the stages before it, under the float network."""
        codes = self._check(codes)
        stages = codes.shape[1] if stages is None else stages
        B, _, h, w = codes.shape
        bits = torch.zeros(B, stages, dtype=torch.float64, device=codes.device)
        for s, p in schedule(stages):
            m = pass_map(h, w, s).to(codes.device)
            st = torch.full((B,), s, device=codes.device)
            logp = F.log_softmax(self.logits(codes, st, (m < p).expand(B, h, w)).double(), 1)
            nll = -logp.gather(1, codes[:, s : s + 1])[:, 0]
            bits[:, s] += (nll * (m == p)).sum((1, 2)) / math.log(2)
        return bits

    @torch.no_grad()
    def complete(self, codes: torch.Tensor, keep: torch.Tensor, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """First-stage code grids ``codes`` (B, h, w) with the cells where ``keep`` (h, w) or
        (B, h, w) bool is False resampled from the prior, pass by pass, each given every
        kept cell and the cells resampled before it (inpainting; any grid size).
        ``temperature`` divides the logits. Returns (B, h, w) int64.

        The passes run over the window of cells the resampled ones can see (their bounding
        box widened by the network's reach, aligned to the pass schedule's tile), so a small
        region of a large grid costs what the region does; the result is the same as over
        the whole grid."""
        if not torch.is_tensor(codes) or codes.dim() != 3:
            raise ValueError("codes must be a (B, h, w) integer tensor")
        codes = self._check(codes[:, None])[:, 0].clone()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        B, h, w = codes.shape
        keep = torch.as_tensor(keep, dtype=torch.bool, device=codes.device).expand(B, h, w)
        free = ~keep.all(0)
        if not free.any():
            return codes
        rows, cols = free.any(1).nonzero()[:, 0], free.any(0).nonzero()[:, 0]
        r, tile = math.ceil(grid.reach(self)), len(STAGE1_TILE)
        top, left = (max(0, int(v[0]) - r) // tile * tile for v in (rows, cols))
        bottom, right = min(h, int(rows[-1]) + 1 + r), min(w, int(cols[-1]) + 1 + r)
        window = codes[:, top:bottom, left:right]  # a view: filled in place
        keep = keep[:, top:bottom, left:right]
        m = pass_map(bottom - top, right - left, 0).to(codes.device)
        stage = torch.zeros(B, dtype=torch.long, device=codes.device)
        for p in range(num_passes(0)):
            todo = ~keep & (m == p)
            if not todo.any():
                continue
            known = keep | (m < p)
            logits = self.logits(window[:, None], stage, known).permute(0, 2, 3, 1)[todo]
            probs = F.softmax(logits.float() / temperature, -1)
            window[todo] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes

    # -- the integer network (coding) ---------------------------------------------------------
    @torch.no_grad()
    def freeze(self, codes: torch.Tensor, percentile: float = 99.99) -> None:
        """Compute the integer network from the float one, its activation ranges measured on
        calibration ``codes`` (B, S, h, w) (a few hundred grids): a chosen percentile of each
        layer's outputs maps to ACT_MAX. Sets ``frozen``; :meth:`counts` uses only these."""
        codes = self._check(codes)
        B, S, h, w = codes.shape
        g = torch.Generator().manual_seed(0)
        stage = torch.randint(0, S, (B,), generator=g)
        known = torch.rand(B, h, w, generator=g) < torch.rand(B, 1, 1, generator=g)
        e_scale = float(self.embed.detach().abs().max()) / W_MAX
        self.embed_int.copy_(torch.round(self.embed.detach() / e_scale).clamp(-W_MAX, W_MAX))
        flag = max(1, min(W_MAX, round(1.0 / e_scale)))
        self.flag_int.fill_(flag)
        # the float input in integer units: embeddings / e_scale, flags as flag_int
        x = self._input(self.embed / e_scale, codes, stage, known, float(flag))
        # (the float net saw flags of 1.0, i.e. flag / (1 / e_scale) in these units: the
        # first layer's mask and stage weights are rescaled to match)
        in_scale = torch.full((self.config.in_channels,), e_scale)
        in_scale[-(1 + self.config.num_stages) :] = 1.0 / flag
        for i, conv in enumerate([*self.convs, self.head]):
            wt = conv.weight.detach() * in_scale[None, :, None, None]
            w_scale = wt.abs().amax((1, 2, 3)).clamp_min(1e-12) / W_MAX
            w_int = torch.round(wt / w_scale[:, None, None, None]).clamp(-W_MAX, W_MAX)
            getattr(self, f"w{i}").copy_(w_int)
            y = F.conv2d(x, wt, conv.bias, padding=conv.padding)  # float output, true units
            last = i == len(self.convs)
            if last:  # logits in 1 / LOGIT_UNIT nat
                out_scale = 1.0 / LOGIT_UNIT
            else:
                y = F.relu(y)
                out_scale = max(float(torch.quantile(y.flatten()[:2**20], percentile / 100)),
                                1e-6) / ACT_MAX  # fmt: skip
            # floor(acc * scale + off) rounds y / out_scale to the nearest integer
            getattr(self, f"scale{i}").copy_(w_scale / out_scale)
            getattr(self, f"off{i}").copy_(conv.bias.detach() / out_scale + 0.5)
            x = y / out_scale
            in_scale = torch.full((conv.out_channels,), out_scale)
        self.frozen.fill_(True)

    def _int_features(self, codes, stage, known) -> torch.Tensor:
        """The integer network up to the head: (B, C, h, w) float32 holding integers."""
        # channels_last (as _input builds it): oneDNN is faster on it; the sums are exact
        # either way
        x = self._input(self.embed_int.float(), codes, stage, known, float(self.flag_int))
        nhwc = torch.channels_last
        for i in range(len(self.convs)):
            weight = getattr(self, f"w{i}").float().contiguous(memory_format=nhwc)
            acc = F.conv2d(x, weight, padding=1)
            x = _requant(acc, getattr(self, f"scale{i}"), getattr(self, f"off{i}"), relu=True)
        return x

    def counts(self, codes: torch.Tensor, steps) -> list[np.ndarray]:
        """:meth:`iter_counts` as a list: every step's table at once."""
        return list(self.iter_counts(codes, steps))

    @torch.no_grad()
    def iter_counts(self, codes: torch.Tensor, steps) -> Iterator[np.ndarray]:
        """Integer counts (cells of the pass, K), as float64 (whole numbers below 2^17, exact;
        the dtype the entropy coder takes), for each (stage, pass) of ``steps``
        (see :func:`schedule`) of one grid ``codes`` (1, S', h, w), cells in raster order
        within a pass. All steps run as one batch: the encoder asks for every step at once,
        the decoder for one step at a time with what it has decoded so far; a step's counts
        depend only on the codes it may see, so both get the same integers. The tables come
        one at a time (a 1 MP photo's are 134 MB a pass): the encoder codes each and drops it."""
        if not bool(self.frozen):
            raise ValueError("this grid prior is not frozen: call freeze() after training")
        steps = list(steps)
        codes = self._check(codes, max(s for s, _ in steps))
        if codes.shape[0] != 1:
            raise ValueError("counts takes one grid (1, S, h, w)")
        _, _, h, w = codes.shape
        maps = [pass_map(h, w, s) for s, _ in steps]
        known = torch.stack([m < p for m, (_, p) in zip(maps, steps, strict=True)])
        stage = torch.tensor([s for s, _ in steps])
        feats = self._int_features(codes.expand(len(steps), -1, -1, -1), stage, known)
        feats = feats.permute(0, 2, 3, 1).reshape(len(steps), h * w, -1)  # a view: NHWC
        i = len(self.convs)
        head_w = getattr(self, f"w{i}").float()[:, :, 0, 0]  # (K, C)
        exp_counts = torch.from_numpy(_EXP_COUNTS)
        for k, (m, (_, p)) in enumerate(zip(maps, steps, strict=True)):
            f = feats[k][(m == p).flatten()]  # (cells, C)
            acc = f @ head_w.t()  # exact: integers, sums below 2^24
            logit = _requant(acc, getattr(self, f"scale{i}"), getattr(self, f"off{i}"), relu=False)
            # integer differences below 2^21, exact in float32, in place
            d = torch.sub(logit.max(1, keepdim=True).values, logit, out=logit)
            d = d.clamp_max_(len(EXP_TABLE) - 1).to(torch.int32)
            # the table lookup on torch's threads (np.take runs on one)
            yield torch.index_select(exp_counts, 0, d.view(-1)).view(d.shape).numpy()


def _requant(acc: torch.Tensor, scale: torch.Tensor, off: torch.Tensor, relu: bool):
    """Requantize exact float32 integer sums ``acc`` (channels on dim 1, overwritten):
    floor(acc * scale + off), clamped to [0, ACT_MAX] (after a ReLU) or to +-2^20 (logits).
    A float32 multiply, add and floor, each exact or correctly rounded under IEEE 754 (and
    run as separate operations, never fused): the same integers on every machine."""
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    y = acc.mul_(scale.view(shape)).add_(off.view(shape)).floor_()
    return y.clamp_(0, ACT_MAX) if relu else y.clamp_(-(2**20), 2**20)


def load_grid_prior(source, model=None, **hub) -> GridPrior:
    """A frozen :class:`GridPrior` from ``source`` (a folder, a shipped name or a Hub repo
    id), checked against ``model`` when given: ValueError if it models another VQ-VAE's
    codes (its stages' codebooks differ), or was never frozen."""
    prior = GridPrior.from_pretrained(source, **hub).eval()
    if not bool(prior.frozen):
        raise ValueError(f"the grid prior in {source} is not frozen: it cannot code")
    c = prior.config
    if model is not None:
        mc = model.config
        if (c.codebook_size, c.num_stages) != (mc.codebook_size, mc.num_stages) or (
            c.vqvae_fingerprint and c.vqvae_fingerprint != stage_fingerprint(model)
        ):
            raise ValueError(
                f"the grid prior in {source} models another VQ-VAE's codes "
                f"({c.vqvae_name or 'unnamed'}), not {mc.name}'s"
            )
    return prior
