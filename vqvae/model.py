"""The VQ-VAE: encoder -> vector quantizer -> decoder (van den Oord et al., 2017)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint, grid
from .base import PretrainedMixin
from .config import VQVAEConfig
from .quantizer import Quantizer, VectorQuantizer


def check_image_range(x: torch.Tensor) -> None:
    """Raise ValueError unless every value of the float tensor ``x`` (any shape: a batch or
    a whole dataset) is finite and in [0, 1] (1e-3 tolerance for resampling overshoot).
    One host sync: call it at the API boundary or once per dataset, not in a training
    step."""
    # One host sync for both checks (NaN fails every comparison).
    if not bool(((x >= -1e-3) & (x <= 1 + 1e-3)).all()):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or infinite values")
        raise ValueError(
            f"images must be in [0, 1], got values in [{x.min().item():.3g}, {x.max().item():.3g}]"
        )


class ResidualStack(nn.Module):
    """``layers`` x (ReLU, 3x3 conv, ReLU, 1x1 conv, skip), then a ReLU, as in the paper."""

    def __init__(self, channels: int, res_channels: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, res_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(res_channels, channels, 1),
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class Encoder(nn.Module):
    """log2(downsample) strided 4x4 convs, a 3x3 conv, a residual stack, a 1x1 conv to D."""

    def __init__(self, c: VQVAEConfig):
        super().__init__()
        n_down = int(math.log2(c.downsample))
        h = c.hidden_channels
        chans = [c.in_channels] + [h // 2 ** (n_down - 1 - i) for i in range(n_down)]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=False):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        layers += [
            nn.Conv2d(h, h, 3, padding=1),
            ResidualStack(h, c.res_channels, c.res_layers),
            nn.Conv2d(h, c.embedding_dim, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """The mirror image: 3x3 conv from D, a residual stack, strided 4x4 transposed convs."""

    def __init__(self, c: VQVAEConfig):
        super().__init__()
        n_down = int(math.log2(c.downsample))
        h = c.hidden_channels
        chans = [h // 2**i for i in range(n_down)] + [c.in_channels]
        layers: list[nn.Module] = [
            nn.Conv2d(c.embedding_dim, h, 3, padding=1),
            ResidualStack(h, c.res_channels, c.res_layers),
        ]
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=False)):
            layers.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < n_down - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class VQVAEOutput:
    """What ``model(x)`` returns. Images in [0, 1]; losses are scalars."""

    reconstruction: torch.Tensor  # (B, C, H, W) in [0, 1]
    indices: torch.Tensor | None  # (B, h, w) int64; None when run with quantize=False
    loss: torch.Tensor  # recon_loss + codebook_loss + commitment_loss
    recon_loss: torch.Tensor  # MSE in the model's internal [-1, 1] pixel scale
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    codes_used: torch.Tensor
    latents: torch.Tensor | None = None  # z_e (B, D, h, w): the encoder's output


class VQVAE(PretrainedMixin, nn.Module):
    """A VQ-VAE built from a :class:`VQVAEConfig`.

    Images are float tensors in [0, 1] of shape (B, C, H, W); codes are int64 tensors of
    shape (B, h, w). ``encode`` / ``decode`` / ``model(x)`` take H and W divisible by
    ``config.downsample`` (d) and raise otherwise; :meth:`encode_image` /
    :meth:`decode_codes` take any H x W (padded to the grid and cropped back, codes
    (ceil(H/d), ceil(W/d)); :mod:`vqvae.grid` maps cells to pixels) and can work in tiles
    to bound memory. Internally pixels are mapped to [-1, 1].

    Saved as ``model.safetensors`` + ``config.json``: :meth:`save_pretrained`,
    :meth:`from_pretrained` (a folder, a shipped name or a Hub repo id),
    :meth:`push_to_hub` (:class:`vqvae.base.PretrainedMixin`).
    """

    config_class = VQVAEConfig
    weights_name = checkpoint.WEIGHTS_NAME
    config_name = checkpoint.CONFIG_NAME
    what = "model"
    config_what = "VQ-VAE config"
    card_tags = ("image-tokenizer",)

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer: Quantizer = _stage_quantizer(config)
        # stages 2.. of a residual quantizer (empty for a plain VQ-VAE, whose weights then
        # have exactly the keys they always had)
        stages = range(config.num_stages - 1)
        self.residual = nn.ModuleList(_stage_quantizer(config) for _ in stages)
        self.decoder = Decoder(config)
        # training only (not saved): the share of images a training forward decodes from
        # stage 1 alone; None draws the stages kept uniformly from 1..num_stages
        self.first_stage_share: float | None = None

    # -- input checks --------------------------------------------------------------------
    def _check_image_shape(self, x: torch.Tensor, *, any_size: bool = False) -> None:
        """Type and shape checks: host-side only (no sync), so they run in every forward.
        With ``any_size`` any positive H x W passes, else only multiples of downsample."""
        c = self.config
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError("images must be a float tensor in [0, 1] of shape (B, C, H, W)")
        if x.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != c.in_channels:
            raise ValueError(
                f"this model takes {c.in_channels}-channel images, got "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        if 0 in x.shape[2:] or (
            not any_size and (x.shape[2] % c.downsample or x.shape[3] % c.downsample)
        ):
            what = "positive" if any_size else f"positive multiples of {c.downsample}"
            raise ValueError(
                f"image height and width must be {what}, got {x.shape[2]}x{x.shape[3]}"
                + ("" if any_size else " (encode_image takes any size)")
            )

    def check_images(self, x: torch.Tensor) -> None:
        """Raise TypeError/ValueError unless ``x`` is a float (B, C, H, W) batch this model
        takes (C = ``in_channels``, H and W positive multiples of ``downsample``) with every
        value finite and in [0, 1] (:func:`check_image_range`, one host sync).

        The public entry points (``encode``, ``encode_continuous``, ``model(x)`` in eval
        mode) call it. The training forward (``model.train()(x)``) checks the shape only,
        so a training step has no host sync: check the data's range once up front
        (``check_image_range(dataset)``) instead."""
        self._check_image_shape(x)
        check_image_range(x)

    _check_images = check_images  # the old private name

    def _check_indices(self, indices: torch.Tensor, *, stages: bool = False) -> None:
        """Type, shape ((B, h, w), or (B, n, h, w) with 1 <= n <= num_stages when
        ``stages``) and range checks of code indices."""
        shape = "(B, h, w)" + (" or (B, n, h, w)" if stages else "")
        if not torch.is_tensor(indices) or indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"code indices must be an integer tensor of shape {shape}")
        if indices.dim() != 3 and not (stages and indices.dim() == 4):
            raise ValueError(f"code indices must have shape {shape}, got {tuple(indices.shape)}")
        if indices.dim() == 4 and not 1 <= indices.shape[1] <= self.config.num_stages:
            raise ValueError(
                f"this model has {self.config.num_stages} quantizer stage(s), got codes of "
                f"{indices.shape[1]} stages (shape {tuple(indices.shape)})"
            )
        K = self.config.codebook_size
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= K):
            raise ValueError(
                f"code indices must be in [0, {K - 1}], got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    # -- the pieces ----------------------------------------------------------------------
    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents z_e (B, D, h, w) of images ``x`` (B, C, H, W) in [0, 1]."""
        self.check_images(x)
        return self.encoder(x * 2.0 - 1.0)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes of latents (B, D, h, w): returns (quantized (B, D, h, w) float32,
        indices (B, h, w) int64). Pure lookup (the quantizer's ``quantize``): no EMA
        update or restart, in any mode."""
        return self.quantizer.quantize(z_e)

    def quantize_stages(self, z_e: torch.Tensor, stages: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``stages`` stages of the residual quantizer on latents ``z_e``
        (B, D, h, w): stage s takes the nearest code to what stages < s left. Returns (the
        sum of their code vectors (B, D, h, w) float32, indices (B, stages, h, w) int64).
        Pure, like :meth:`quantize` (``stages=1`` is :meth:`quantize`)."""
        if isinstance(stages, bool) or not isinstance(stages, int):
            raise TypeError(f"stages must be an int, got {type(stages).__name__}")
        if not 1 <= stages <= self.config.num_stages:
            raise ValueError(
                f"stages must be in [1, {self.config.num_stages}] for this model, got {stages}"
            )
        total, idx = self.quantizer.quantize(z_e)
        codes = [idx]
        for vq in self.residual[: stages - 1]:
            q, idx = vq.quantize(z_e.float() - total)
            total = total + q
            codes.append(idx)
        return total, torch.stack(codes, 1)

    def lookup_stages(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents (B, D, h, w): the sum of the code vectors of ``codes`` (B, n, h, w),
        stage s's codes from stage s's codebook."""
        quantizers = [self.quantizer, *self.residual]
        return sum(quantizers[s].lookup(codes[:, s]) for s in range(codes.shape[1]))

    @staticmethod
    def _recon_loss(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """MSE in the internal [-1, 1] pixel scale (4x the [0, 1]-scale MSE), in fp32; one
        definition for pre-training and VQ training alike."""
        return 4.0 * F.mse_loss(raw.float(), x.float())

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return (self.decoder(z) + 1.0) * 0.5

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from latents (B, D, h, w) (quantized or not)."""
        if z.dim() != 4 or z.shape[1] != self.config.embedding_dim:
            raise ValueError(
                f"latents must have shape (B, {self.config.embedding_dim}, h, w), "
                f"got {tuple(z.shape)}"
            )
        return self._decode_raw(z).clamp(0.0, 1.0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) int64 of images ``x`` (B, C, H, W) in [0, 1]."""
        return self.quantize(self.encode_continuous(x))[1]

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from code indices (B, h, w) in [0, K)."""
        self._check_indices(indices)
        return self.decode_latents(self.quantizer.lookup(indices.long()))

    # -- images of any size --------------------------------------------------------------
    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        # channels_last on the CPU: oneDNN's convolutions take ~1.3x less CPU time on NHWC
        # activations than on NCHW ones (BENCHMARKS.md, section 11)
        if t.device.type == "cpu":
            return t.contiguous(memory_format=torch.channels_last)
        return t

    @torch.no_grad()
    def encode_image(
        self,
        x: torch.Tensor,
        *,
        tile: int | None = None,
        workers: int = 1,
        return_latents: bool = False,
        stages: int | None = None,
    ):
        """Codes (B, ceil(H/d), ceil(W/d)) int64 of images ``x`` (B, C, H, W) in [0, 1] of
        any size, d = ``config.downsample``. The image is padded at the bottom and right by
        repeating its last row and column (:func:`vqvae.grid.pad_to_grid`: no dark or
        ringing border); cell (i, j) covers pixels ``vqvae.grid.cell_box((i, j), d, (H, W))``.
        For H and W multiples of d the codes equal :meth:`encode`'s.

        ``tile``: encode tiles of about ``tile`` x ``tile`` pixels, each with a halo as wide
        as the encoder's receptive field, so memory is bounded by the tile size and the
        codes equal the whole-image ones; ``workers`` tiles at once, each on its own thread
        (:mod:`vqvae.parallel`: on the CPU with one torch thread, the way to use several
        cores). ``return_latents``: also return the latents z_e
        (B, D, h, w) float32 (the encoder's output, before quantization). ``stages``: the
        codes (B, stages, h, w) of the residual quantizer's first ``stages`` stages
        (:meth:`quantize_stages`) instead of the first stage's (B, h, w)."""
        self._check_image_shape(x, any_size=True)
        check_image_range(x)
        d = self.config.downsample

        def encode(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z_e = self.encoder(self._layout(t) * 2.0 - 1.0)
            if stages is None:
                return z_e, self.quantize(z_e)[1]
            return z_e, self.quantize_stages(z_e, stages)[1]

        x = grid.pad_to_grid(x, d)
        if tile is None:
            z_e, codes = encode(x)
        else:
            halo = math.ceil(grid.reach(self.encoder) / d)
            cells = grid.tile_cells(tile, d)
            z_e, codes = grid.tiled_encode(encode, x, d, cells, halo, workers)
        return (codes, z_e.contiguous()) if return_latents else codes

    @torch.no_grad()
    def decode_codes(
        self, codes: torch.Tensor, size=None, *, tile: int | None = None, workers: int = 1
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from codes (B, h, w) in [0, K), or (B, n, h, w): the
        first n stages of the residual quantizer (:meth:`lookup_stages`), cropped to
        ``size`` = (H, W), an image size whose grid is (h, w) (see :meth:`encode_image`);
        by default (h d, w d). For the default size the images equal :meth:`decode`'s.

        ``tile``: decode tiles of about ``tile`` x ``tile`` pixels, each with a halo of
        codes as wide as the decoder's receptive field: bounded memory, the same pixels
        up to float rounding; ``workers`` tiles at once (as :meth:`encode_image`)."""
        self._check_indices(codes, stages=True)
        d = self.config.downsample
        h, w = codes.shape[-2:]
        H, W = (h * d, w * d) if size is None else (int(size[0]), int(size[1]))
        if grid.grid_shape((H, W), d) != (h, w) or min(H, W) < 1:
            raise ValueError(
                f"a {H}x{W} image has a {grid.grid_shape((H, W), d)} code grid, "
                f"not the {h}x{w} of these codes"
            )

        if tile is None:
            out = self._decode_cells(codes)
        else:
            cells = grid.tile_cells(tile, d)
            halo = self.decoder_halo
            out = grid.tiled_decode(self._decode_cells, codes, d, cells, halo, workers)
        return out[..., :H, :W].clamp(0.0, 1.0).contiguous()

    @torch.no_grad()
    def decode_region(self, codes: torch.Tensor, box) -> torch.Tensor:
        """The pixels of the cells ``box`` = (top, left, bottom, right) (cells, bottom and
        right exclusive) of codes (B, h, w): images (B, C, (bottom - top) d, (right - left) d)
        in [0, 1], equal to ``decode_codes(codes)[..., top d : bottom d, left d : right d]`` up
        to float rounding. Only the box and a halo of codes as wide as the decoder's reach
        are decoded, so after editing a few cells of a large grid, decoding the box around
        them and pasting it into the last picture costs a fraction of a full decode."""
        self._check_indices(codes)
        out = grid.decode_box(
            self._decode_cells, codes, box, self.config.downsample, self.decoder_halo
        )
        return out.clamp(0.0, 1.0).contiguous()

    @property
    def decoder_halo(self) -> int:
        """How many cells away a code can change the decoded pixels (the decoder's reach,
        :func:`vqvae.grid.reach`, rounded up): editing cells changes the pixels of the
        cells within this many of them, and decoding a box of cells needs the codes this
        far around it."""
        return math.ceil(grid.reach(self.decoder))

    def _decode_cells(self, c: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w), or stage codes (B, n, h, w) -> images (B, C, h d, w d) in [0, 1],
        unclamped."""
        c = c.long()
        z = self.quantizer.lookup(c) if c.dim() == 3 else self.lookup_stages(c)
        return self._decode_raw(self._layout(z))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.quantizer.codebook

    def forward(self, x: torch.Tensor, quantize: bool = True) -> VQVAEOutput:
        """Encode, quantize (updating the codebook in training mode when EMA or restarts are
        on) and decode images ``x`` (B, C, H, W) in [0, 1].

        With ``quantize=False`` the decoder reads z_e directly (plain autoencoder, used to
        pre-train encoder and decoder before k-means init); ``indices`` is then None and the
        quantizer's losses and statistics are zero.

        In training mode (and under ``torch.compile``) the input's value range is not
        checked, only its shape: the step then has no host sync and no data-dependent
        Python branch, and compiles to one graph (``torch.compile(model, fullgraph=True)``).
        Check the training data once with :func:`check_image_range`. In eval mode the
        forward checks like :meth:`check_images`."""
        self._check_image_shape(x)
        if not self.training and not torch.compiler.is_compiling():
            check_image_range(x)
        z_e = self.encoder(x * 2.0 - 1.0)
        if not quantize:
            raw = self._decode_raw(z_e)
            recon_loss = self._recon_loss(raw, x)
            zero = recon_loss.new_zeros(())
            return VQVAEOutput(
                raw.clamp(0.0, 1.0), None, recon_loss, recon_loss, zero, zero, zero, zero, z_e
            )
        q = self.quantizer(z_e)
        quantized, codebook_loss, commitment_loss = q.quantized, q.codebook_loss, q.commitment_loss
        if self.residual:
            quantized, extra = self._residual_forward(z_e, q.quantized)
            codebook_loss = codebook_loss + extra[0]
            commitment_loss = commitment_loss + extra[1]
        raw = self._decode_raw(quantized.to(z_e.dtype))
        recon_loss = self._recon_loss(raw, x)
        loss = recon_loss + codebook_loss + commitment_loss
        return VQVAEOutput(
            raw.clamp(0.0, 1.0),
            q.indices,
            loss,
            recon_loss,
            codebook_loss,
            commitment_loss,
            q.perplexity,
            q.codes_used,
            z_e,
        )

    def _residual_forward(self, z_e: torch.Tensor, first: torch.Tensor):
        """Stages 2.. of the training forward, after the first stage's straight-through
        output ``first``: each stage quantizes (and, in training, updates its codebook on)
        what the stages before it left. Returns (straight-through latents, (codebook loss,
        commitment loss) summed over stages 2..).

        In training mode each image is decoded from its first n stages (quantizer dropout, as
        in SoundStream: :meth:`_stages_kept`), so that every prefix of stages decodes on its
        own; in eval mode from all stages."""
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()
            total = first.detach()
            kept = total.clone()
            if self.training:
                n = self._stages_kept(z.shape[0], z.device)
            codebook_loss = commitment = z.new_zeros(())
            for s, vq in enumerate(self.residual, start=2):
                o = vq(z - total)  # the residual keeps its gradient to the encoder
                q = o.quantized.detach()
                total = total + q
                kept = kept + (q * (n >= s) if self.training else q)
                codebook_loss = codebook_loss + o.codebook_loss
                commitment = commitment + o.commitment_loss
            # straight-through: the value of the kept stages, the identity gradient to z_e
            return z + (kept - z).detach(), (codebook_loss, commitment)

    def _stages_kept(self, batch: int, device) -> torch.Tensor:
        """n (batch, 1, 1, 1) for quantizer dropout: uniform over 1..num_stages, or with
        :attr:`first_stage_share` set, 1 for that share of the images and uniform over
        2..num_stages for the rest (the first stage alone, the lowest rate, then keeps the
        decoder's attention it had before later stages were added)."""
        S, share = self.config.num_stages, self.first_stage_share
        shape = (batch, 1, 1, 1)
        if share is None:
            return torch.randint(1, S + 1, shape, device=device)
        later = torch.randint(2, S + 1, shape, device=device)
        return torch.where(torch.rand(shape, device=device) < share, 1, later)

    # -- files (from_pretrained, save_pretrained, push_to_hub: vqvae.base) --------------
    def _card_dataset_name(self) -> str:
        return self.config.name

    def _card_body(self, repo_id: str) -> str:
        c = self.config
        return (
            f"# VQ-VAE `{c.name}`\n\n"
            f"A VQ-VAE ({c.image_size}x{c.image_size}x{c.in_channels} images -> "
            f"{c.latent_size}x{c.latent_size} codes of a {c.codebook_size}-code book, "
            f"{c.bits_per_image:.0f} bits per image) for the `vqvae` library.\n\n"
            "```python\nimport vqvae\n\n"
            f'model = vqvae.VQVAE.from_pretrained("{repo_id}")\n'
            f"codes = model.encode(images)  # (B, {c.latent_size}, {c.latent_size}) int64\n"
            f"recon = model.decode(codes)  # (B, {c.in_channels}, {c.image_size}, "
            f"{c.image_size}) in [0, 1]\n```\n"
        )

    @property
    def device(self) -> torch.device:
        return self.quantizer.codebook.device


def _stage_quantizer(config: VQVAEConfig) -> VectorQuantizer:
    return VectorQuantizer(
        config.codebook_size,
        config.embedding_dim,
        beta=config.beta,
        use_ema=config.use_ema,
        ema_decay=config.ema_decay,
        ema_eps=config.ema_eps,
        dead_code_threshold=config.dead_code_threshold,
    )


def load_pretrained(source, device="cpu", **hub) -> VQVAE:
    """``VQVAE.from_pretrained``: a model by folder, shipped name or Hub repo id (``hub``:
    its ``revision``, ``cache_dir`` and ``local_files_only`` keywords)."""
    return VQVAE.from_pretrained(source, device=device, **hub)


def save_pretrained(model: VQVAE, directory, dtype: str = "float32") -> None:
    """``model.save_pretrained(directory, dtype=dtype)``."""
    model.save_pretrained(directory, dtype=dtype)
