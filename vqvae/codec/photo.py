"""Format 3: one image of any size, at a chosen rate, coded under a :class:`GridPrior`.

A rate is how many stages of the VQ-VAE's residual quantizer are kept, and whether the
image is first shrunk by an integer factor (the lowest rate: a quarter of the cells).
The encoder computes every cell's counts in one batched run of the prior's integer
network; the decoder runs it pass by pass (:mod:`vqvae.grid_prior`: both get the same
integers). The header (docs/vqz-format.md) holds the image size and the rate, so a file
decodes to an image of the size it came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import grid
from ..grid_prior import GridPrior, pass_map, schedule, stage_fingerprint
from . import coder
from .format import (
    ID_BITS,
    MAGIC_NIBBLE,
    ForeignFileError,
    as_bytes,
    id_bytes,
    short_id,
    split_ids,
)
from .rdo import rd_codes
from .refine import REFINE_TILE, refine_latents

VERSION = 3
FIRST_BYTE = MAGIC_NIBBLE << 4 | VERSION
CHECKSUM_BYTES = 2
MAX_SIDE = 1 << 14  # the largest height or width a header may give
MAX_DOWNSCALE = 4
RUN_CELLS = 1 << 18  # the encoder batches (stage, pass) steps up to this many cells a run


@dataclass(frozen=True)
class Rate:
    """An operating point: ``stages`` quantizer stages of the image shrunk ``downscale``
    times (1 = at its own size)."""

    stages: int
    downscale: int = 1

    def coded_size(self, size) -> tuple[int, int]:
        """The size (h, w) an image of ``size`` (H, W) is coded at: ceil(H / downscale) x
        ceil(W / downscale)."""
        return (-(-size[0] // self.downscale), -(-size[1] // self.downscale))

    def shrink(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) as this rate codes them: bicubic (antialiased) to
        :meth:`coded_size`, unchanged at downscale 1."""
        return _resize(x, self.coded_size(x.shape[-2:]))

    @property
    def name(self) -> str:
        size = "" if self.downscale == 1 else f", 1/{self.downscale} size"
        return f"{self.stages} stage{'s' if self.stages > 1 else ''}{size}"


def rates(model) -> list[Rate]:
    """A model's rates, lowest first: the first stage at half size, then 1..S stages at
    full size (S = ``model.config.num_stages``)."""
    return [Rate(1, 2)] + [Rate(n) for n in range(1, model.config.num_stages + 1)]


def _rate(model, rate) -> Rate:
    """``rate`` as a Rate of ``model``: a Rate, or an index into :func:`rates` (negative
    counts from the highest); None is the highest."""
    options = rates(model)
    if rate is None:
        return options[-1]
    if isinstance(rate, Rate):
        if not 1 <= rate.stages <= model.config.num_stages:
            raise ValueError(
                f"this model has {model.config.num_stages} stage(s), the rate asks for "
                f"{rate.stages}"
            )
        if not 1 <= rate.downscale <= MAX_DOWNSCALE:
            raise ValueError(f"downscale must be in [1, {MAX_DOWNSCALE}], got {rate.downscale}")
        return rate
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise TypeError(f"rate must be a Rate or an int index, got {type(rate).__name__}")
    if not -len(options) <= rate < len(options):
        raise ValueError(f"rate index must be in [0, {len(options) - 1}], got {rate}")
    return options[rate]


def prior_fingerprint(prior: GridPrior) -> str:
    """A short hex digest of what fixes a grid prior's counts: its config's sizes and its
    integer network (the frozen buffers)."""
    c = prior.config
    h = hashlib.sha256(repr((c.codebook_size, c.num_stages, c.embed_dim, c.channels,
                             c.layers)).encode())  # fmt: skip
    state = prior.state_dict()
    params = {name for name, _ in prior.named_parameters()}
    for k in sorted(state):
        if k in params:
            continue  # the float network does not enter coding
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class PhotoHeader:
    """What a version 3 header says."""

    vqvae_id: int
    prior_id: int
    height: int
    width: int
    rate: Rate
    checksum: bytes
    header_bytes: int


def _head(vqvae_fp: str, prior_fp: str, size, rate: Rate) -> bytes:
    return (bytes([FIRST_BYTE]) + id_bytes(vqvae_fp, prior_fp)
            + _varint(size[0]) + _varint(size[1])
            + bytes([rate.downscale << 4 | rate.stages]))  # fmt: skip


def is_photo_file(data) -> bool:
    """Whether ``data`` (bytes-like) starts as a photo's ``.vqz`` (version 3) does; the
    others (versions 1, 2, 4) start with another byte."""
    return bytes(data[:1]) == bytes([FIRST_BYTE])


def read_photo_header(data) -> PhotoHeader:
    """Parse a version 3 header; ValueError for anything else or a damaged one."""
    b = as_bytes(data)
    if not is_photo_file(b):
        raise ValueError("not a version 3 .vqz file")
    pos, sizes = 4, []
    if len(b) < pos:
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, cut inside its header")
    ids = split_ids(b[1:4])
    for _ in range(2):
        n = shift = 0
        while True:
            if pos >= len(b) or shift > 14:
                raise ValueError("truncated or corrupted .vqz file: a bad image size")
            n |= (b[pos] & 0x7F) << shift
            pos += 1
            shift += 7
            if not b[pos - 1] & 0x80:
                break
        sizes.append(n)
    if not all(1 <= s <= MAX_SIDE for s in sizes):
        raise ValueError(f"corrupted .vqz file: image size {sizes[0]}x{sizes[1]}")
    if len(b) < pos + 1 + CHECKSUM_BYTES:
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, cut inside its header")
    rate = Rate(b[pos] & 0x0F, b[pos] >> 4)
    if rate.stages < 1 or not 1 <= rate.downscale <= MAX_DOWNSCALE:
        raise ValueError("corrupted .vqz file: a bad rate byte")
    pos += 1
    return PhotoHeader(*ids, sizes[0], sizes[1], rate,
                       b[pos : pos + CHECKSUM_BYTES], pos + CHECKSUM_BYTES)  # fmt: skip


def _checksum(head: bytes, vqvae_fp: str, prior_fp: str, codes: np.ndarray) -> bytes:
    h = hashlib.blake2s(head, digest_size=CHECKSUM_BYTES)
    h.update(f"{vqvae_fp}|{prior_fp}".encode())
    h.update(codes.astype("<i4").tobytes())
    return h.digest()


def _check_pair(model, prior: GridPrior) -> tuple[str, str]:
    if not isinstance(prior, GridPrior):
        raise TypeError(f"prior must be a vqvae.GridPrior, got {type(prior).__name__}")
    if not bool(prior.frozen):
        raise ValueError("this grid prior is not frozen (call freeze() after training)")
    vqvae_fp = stage_fingerprint(model)
    c = prior.config
    if c.vqvae_fingerprint and c.vqvae_fingerprint != vqvae_fp:
        raise ValueError(
            f"this grid prior belongs to another VQ-VAE ({c.vqvae_name or 'unnamed'}), "
            f"not to {model.config.name}"
        )
    if c.codebook_size != model.config.codebook_size or c.num_stages < model.config.num_stages:
        raise ValueError("this grid prior does not fit this VQ-VAE's codebooks or stages")
    return vqvae_fp, prior_fingerprint(prior)


def _as_image(model, image: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(image) or not image.is_floating_point():
        raise TypeError("image must be a float tensor (C, H, W) or (1, C, H, W) in [0, 1]")
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"one image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    if max(x.shape[-2:]) > MAX_SIDE:
        raise ValueError(f"image sides must be at most {MAX_SIDE}, got {tuple(x.shape[-2:])}")
    return x.to(model.device, torch.float32)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bicubic", antialias=True).clamp(0, 1)


def _pass_cells(h: int, w: int, step) -> np.ndarray:
    s, p = step
    return (pass_map(h, w, s) == p).flatten().numpy()


def choose_codes(model, prior: GridPrior, x: torch.Tensor, rate: Rate, *, tile=None,
                 rdo: float = 0.0, refine: int = 0, on_pass=None) -> torch.Tensor:  # fmt: skip
    """The codes (1, stages, h, w) int64 on the CPU that :func:`compress_image` stores for
    the image ``x`` (1, C, H, W) at ``rate`` (a :class:`Rate`), with its ``tile``, ``rdo``
    and ``refine`` (see there). With ``rdo`` > 0, ``on_pass`` gets each pass's codes and
    counts as they are chosen (:func:`vqvae.codec.rdo.rd_codes`)."""
    xs = rate.shrink(x)
    if not (rdo or refine):
        return model.encode_image(xs, stages=rate.stages, tile=tile).cpu()
    _, z_e = model.encode_image(xs, stages=1, tile=tile, return_latents=True)
    if refine:
        # refined in tiles of at least REFINE_TILE whatever ``tile`` (smaller ones cost bits:
        # BENCHMARKS.md section 17), so the CLI's files equal the library's
        z_e = refine_latents(model, xs, z_e, rate.stages, refine, tile=max(tile or 0, REFINE_TILE))
    return rd_codes(model, prior, z_e.cpu(), rate.stages, rdo, on_pass=on_pass)


def compress_image(
    model,
    prior: GridPrior,
    image: torch.Tensor,
    rate=None,
    *,
    tile=None,
    decoded: bool = False,
    rdo: float = 0.0,
    refine: int = 0,
):
    """One image (C, H, W) or (1, C, H, W) float in [0, 1], of any size, as a version 3
    ``.vqz`` file (bytes) at ``rate`` (a :class:`Rate` or an index into :func:`rates`;
    default the highest). :func:`decompress_image` gives back an image of the same size:
    ``model.decode_codes`` of the kept stages' codes (upscaled if the rate shrinks it).
    ``decoded``: return (file, that image (1, C, H, W)), decoded from the codes at hand
    instead of running the decoder's passes of the prior again. ``rdo`` > 0: codes chosen
    for their error plus ``rdo`` x their bits (:mod:`vqvae.codec.rdo`): a smaller file for
    a little more error, the same decoder; 0 keeps the nearest codes. ``refine`` > 0: that
    many steps of latent refinement first (:mod:`vqvae.codec.refine`, in tiles of at least
    ``REFINE_TILE`` pixels): a closer image for a few more bits, the same decoder, each step
    about a decoder pass forward and back. ``tile``: encode (and with ``decoded``, decode)
    in tiles of about this many pixels, for bounded memory."""
    import constriction

    vqvae_fp, prior_fp = _check_pair(model, prior)
    x = _as_image(model, image)
    r = _rate(model, rate)
    size = tuple(x.shape[-2:])
    enc = constriction.stream.queue.RangeEncoder()
    coded = []  # (stage, pass) as rd_codes hands them on, coded at once

    def code(s, p, symbols, table):
        enc.encode(symbols.astype(np.int32), coder._family(), table)
        coded.append((s, p))

    codes = choose_codes(model, prior, x, r, tile=tile, rdo=rdo, refine=refine, on_pass=code)
    h, w = codes.shape[-2:]
    steps = schedule(r.stages)
    if not coded:  # the nearest codes: every pass's counts from batched runs of the prior
        per_run = max(1, RUN_CELLS // (h * w))  # bounded memory on large photos
        for i in range(0, len(steps), per_run):
            run = steps[i : i + per_run]
            for (s, p), table in zip(run, prior.iter_counts(codes, run), strict=True):
                code(s, p, codes[0, s].flatten().numpy()[_pass_cells(h, w, (s, p))], table)
    if coded != steps:  # rd_codes runs in coding order: a change there is a bug
        raise AssertionError(f"passes coded {coded}, not the schedule {steps}")
    # the output without its trailing zero bytes, which the decoder pads back; no shortest cut
    # (coder._shortest): it decodes the whole payload once for each byte it tries to drop,
    # 0.05-0.7 s for a 512 x 512 photo to save at most 3 of its thousands of bytes
    payload = enc.get_compressed().astype(">u4").tobytes().rstrip(b"\0")
    head = _head(vqvae_fp, prior_fp, size, r)
    data = head + _checksum(head, vqvae_fp, prior_fp, codes.numpy()) + payload
    if not decoded:
        return data
    return data, _decode(model, codes, size, r, tile)


def decompress_codes_v3(model, prior: GridPrior, data) -> tuple[torch.Tensor, PhotoHeader]:
    """The codes (1, stages, h, w) int64 of a version 3 file and its header; ValueError for
    a damaged file, ForeignFileError (a ValueError naming the shipped model that made the
    file, if one did) for a file of another model or grid prior."""
    import constriction

    vqvae_fp, prior_fp = _check_pair(model, prior)
    b = as_bytes(data)
    hd = read_photo_header(b)
    ours = short_id(vqvae_fp, ID_BITS), short_id(prior_fp, ID_BITS)
    if (hd.vqvae_id, hd.prior_id) != ours:
        which = "VQ-VAE" if hd.vqvae_id != ours[0] else "prior"
        raise ForeignFileError(
            f"this file was made with another {which} than {model.config.name}'s",
            b,
            (vqvae_fp, prior_fp),
        )
    if hd.rate.stages > model.config.num_stages:
        raise ValueError(f"the file keeps {hd.rate.stages} stages, the model has fewer")
    h, w = grid.grid_shape(hd.rate.coded_size((hd.height, hd.width)), model.config.downsample)
    codes = torch.zeros(1, hd.rate.stages, h, w, dtype=torch.long)
    dec = constriction.stream.queue.RangeDecoder(coder._words(b[hd.header_bytes :]))
    try:
        for s, p in schedule(hd.rate.stages):
            table = prior.counts(codes, [(s, p)])[0]
            cells = torch.from_numpy(_pass_cells(h, w, (s, p)))
            symbols = dec.decode(coder._family(), table).astype(np.int64)
            codes[0, s].view(-1)[cells] = torch.from_numpy(symbols)
    except AssertionError as e:  # constriction: data its model cannot have produced
        raise ValueError("corrupted or truncated .vqz file: its payload cannot be decoded") from e
    head = b[: hd.header_bytes - CHECKSUM_BYTES]
    if _checksum(head, vqvae_fp, prior_fp, codes.numpy()) != hd.checksum:
        raise ValueError(
            "corrupted or truncated .vqz file: its checksum does not match its decoded codes"
        )
    return codes, hd


def decompress_image(model, prior: GridPrior, data, *, tile=None) -> torch.Tensor:
    """The image (1, C, H, W) in [0, 1] of a version 3 ``.vqz`` file made by
    :func:`compress_image` with this ``model`` and ``prior``, at the size it was made from.
    ValueError for a damaged file, ForeignFileError (a ValueError) for one of another model
    or grid prior: see :func:`decompress_codes_v3`."""
    codes, hd = decompress_codes_v3(model, prior, data)
    return _decode(model, codes, (hd.height, hd.width), hd.rate, tile)


def _decode(model, codes: torch.Tensor, size, rate: Rate, tile) -> torch.Tensor:
    """The image (1, C, H, W) of ``size`` that codes (1, n, h, w) at ``rate`` stand for."""
    with torch.no_grad():
        x = model.decode_codes(codes.to(model.device), rate.coded_size(size), tile=tile)
    return _resize(x, size)
