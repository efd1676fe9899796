"""compress / decompress: images or code grids to ``.vqz`` files (bytes) and back."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ..prior import CodePrior, codebook_fingerprint
from . import coder
from .format import (
    FORMAT_VERSION,
    ID_BITS,
    ONE_PASS_VERSION,
    FileInfo,
    ForeignFileError,
    as_bytes,
    checksum,
    head_bytes,
    prior_fingerprint,
    read_header,
)


def _label_list(prior: CodePrior, labels, n: int) -> list[int]:
    """Per-grid class indices, -1 for no class (labels as CodePrior takes them)."""
    if labels is None:
        return [-1] * n
    if isinstance(labels, (bool, float, str)):
        raise TypeError(
            f"labels must be None, 'auto', an int or a sequence of ints, got {labels!r}"
        )
    t = torch.as_tensor(labels)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got dtype {t.dtype}")
    t = t.expand(n) if t.dim() == 0 else t
    if t.shape != (n,):
        raise ValueError(f"labels must be one int or have shape ({n},), got {tuple(t.shape)}")
    out = [int(x) for x in t.tolist()]
    if prior.num_classes == 0 and any(x >= 0 for x in out):
        raise ValueError("this prior is unconditional: pass labels=None")
    bad = [x for x in out if not -1 <= x < prior.num_classes]
    if bad:
        raise ValueError(
            f"labels must be in [0, {prior.num_classes - 1}] (or -1 for no class), got {bad[0]}"
        )
    return out


def _vqvae_fp(prior: CodePrior, model) -> str:
    """The codebook fingerprint a file names: the model's (checked against the prior), or
    the one the prior's config names."""
    if model is not None:
        prior.check_compatible(model)
        return codebook_fingerprint(model)
    if not prior.config.vqvae_fingerprint:
        raise ValueError(
            "this prior names no VQ-VAE (its config has no vqvae_fingerprint): pass model=, "
            "the VQ-VAE whose codes these are, so the file can name it"
        )
    return prior.config.vqvae_fingerprint


def class_bits(prior: CodePrior) -> float:
    """Bits a file spends on its class: log2(classes + 1), the class (or none) being coded
    with equal probabilities; 0 for an unconditional prior."""
    return math.log2(prior.num_classes + 1) if prior.num_classes else 0.0


def cheapest_labels(prior: CodePrior, codes: torch.Tensor) -> list[int]:
    """Per grid, the class (or -1, none) under which the prior gives ``codes`` the fewest
    bits: what ``labels="auto"`` codes. Every class costs the same log2(classes + 1) bits
    in a file, so this is the cheapest file. (-1 for every grid of an unconditional prior.)"""
    codes = prior._check_codes(codes).cpu()
    C, n = prior.num_classes, len(codes)
    if C == 0 or n == 0:
        return [-1] * n
    choices = torch.arange(-1, C)
    bits = []
    with torch.inference_mode():
        for chunk in codes.split(max(1, 512 // (C + 1))):
            rows = chunk.repeat_interleave(C + 1, dim=0)
            bits.append(prior.nll_bits(rows, choices.repeat(len(chunk))).view(-1, C + 1))
    return choices[torch.cat(bits).argmin(dim=1)].tolist()


def compress_codes(
    prior: CodePrior, codes: torch.Tensor, labels=None, *, model=None, one_pass: bool = False
) -> list:
    """Entropy-code code grids ``codes`` (B, h, w) int in [0, K) under ``prior``: one
    ``.vqz`` file (bytes) per grid.

    ``labels``: None (no class), an int for every grid, ints (B,) with -1 for no class
    on that grid, or ``"auto"``: per grid the class (or none) that makes the file smallest
    (:func:`cheapest_labels`). With a class-conditional prior the class costs
    log2(classes + 1) bits and comes back from :func:`decompress_codes`; the right one
    makes the codes cheaper. ``model`` (the VQ-VAE) is checked against the prior and
    fingerprinted into the header; without it, the fingerprint the prior's config names is
    used. Costs h*w steps of the prior per grid, on the CPU; with ``one_pass`` one
    full-length forward per grid instead (a version 5 file, whose decoding costs a
    full-length forward per cell: see :mod:`vqvae.codec.format`)."""
    cp = coder.coding_prior(prior)
    vqvae_fp = _vqvae_fp(cp, model)
    codes = cp._check_codes(codes)  # on the CPU, as the coding copy is
    if isinstance(labels, str) and labels == "auto":
        labels = cheapest_labels(cp, codes)
    labels = _label_list(cp, labels, len(codes))
    prior_fp = prior_fingerprint(prior)
    version = ONE_PASS_VERSION if one_pass else FORMAT_VERSION
    head = head_bytes(vqvae_fp, prior_fp, version)
    files = []
    with coder.one_thread():
        for grid, label in zip(codes.reshape(len(codes), -1).numpy(), labels, strict=True):
            check = checksum(head, vqvae_fp, prior_fp, label, grid, version)
            files.append(head + check + coder.encode(cp, grid, label, one_pass=one_pass))
    return files


def _file_list(data) -> list[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [bytes(data)]
    if isinstance(data, (str, Path)) or not isinstance(data, Iterable):
        raise TypeError(
            f"data must be the bytes of a .vqz file or a list of them, got {type(data).__name__}"
        )
    return [as_bytes(d) for d in data]


def _which(i: int, n: int) -> str:
    return f"file {i}" if n > 1 else "the file"


def _check_headers(files: list[bytes], infos: list[FileInfo], prior: CodePrior, vqvae_fp: str,
                   prior_fp: str):  # fmt: skip
    """A ForeignFileError unless every header names this VQ-VAE and prior, a ValueError
    unless it names a class the prior has."""
    name = prior.config.vqvae_name or "this model"
    for i, (b, info) in enumerate(zip(files, infos, strict=True)):
        which = _which(i, len(infos))
        ours = info.ids_for(vqvae_fp, prior_fp)
        if info.ids != ours:
            raise ForeignFileError(_foreign(which, info, ours, name), b, (vqvae_fp, prior_fp))
        if info.label is not None and not -1 <= info.label < prior.num_classes:
            raise ValueError(
                f"corrupted .vqz file: {which} names class {info.label}, the prior has "
                f"{prior.num_classes} classes"
            )


def _foreign(which: str, info: FileInfo, ours: tuple[int, ...], name: str) -> str:
    """What differs, as far as a header tells, for a file whose ids are not ``ours``."""
    theirs, mine = ([f"{x:0{-(-info.id_bits // 4)}x}" for x in t] for t in (info.ids, ours))
    if len(info.ids) == 1:  # one id for the pair: which of the two differs is not in it
        return (f"{which} was made with another VQ-VAE or prior (pair id {theirs[0]}), not "
                f"with {name} and this prior (pair id {mine[0]})")  # fmt: skip
    if theirs[0] != mine[0]:
        return (f"{which} was made with another VQ-VAE (id {theirs[0]}), not with {name} "
                f"(id {mine[0]})")  # fmt: skip
    return (f"{which} was made with another prior (id {theirs[1]}) than this one (id {mine[1]}) "
            f"for {name}")  # fmt: skip


def _undecodable(which: str, b: bytes, info: FileInfo, fps: tuple[str, str], why: str):
    """The error for a file whose payload or checksum fails: with the narrow ids of versions
    2 and 4, which many pairs share, a ForeignFileError (its message says if a shipped one
    made it)."""
    text = f"corrupted or truncated .vqz file: {which}'s {why}"
    return ValueError(text) if info.id_bits >= ID_BITS else ForeignFileError(text, b, fps)


def decompress_codes(prior: CodePrior, data, *, model=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``.vqz`` files (bytes, or a list of bytes) written by :func:`compress_codes`
    with this ``prior`` (and ``model``, the VQ-VAE, if given; checked against the prior).

    Returns (codes (B, h, w) int64, labels (B,) int64 with -1 for no class). Raises
    ForeignFileError (a ValueError whose message names the shipped model that made the
    file, if one did) for a file made with another VQ-VAE or prior, ValueError for a
    truncated or corrupted file (its checksum does not match the decoded codes) or an
    unknown format version."""
    files = _file_list(data)
    cp = coder.coding_prior(prior)
    vqvae_fp = _vqvae_fp(cp, model)
    prior_fp = prior_fingerprint(prior)
    infos = [read_header(b) for b in files]  # every header checked before any decoding
    _check_headers(files, infos, cp, vqvae_fp, prior_fp)
    h, w = cp.grid
    out = np.empty((len(files), h * w), dtype=np.int32)
    labels = []
    with coder.one_thread():
        for i, (b, info) in enumerate(zip(files, infos, strict=True)):
            which = _which(i, len(files))
            try:
                out[i], label = coder.decode(
                    coder.coding_prior(prior, info.version), b[info.header_bytes :], info.label,
                    one_pass=info.one_pass,
                )  # fmt: skip
            except AssertionError as e:  # constriction: data its model cannot have produced
                why = "payload cannot be decoded"
                raise _undecodable(which, b, info, (vqvae_fp, prior_fp), why) from e
            head = b[: info.header_bytes - len(info.checksum)]
            if checksum(head, vqvae_fp, prior_fp, label, out[i], info.version) != info.checksum:
                why = ("checksum does not match its decoded codes (or it was made with another "
                       "model or prior whose ids equal these, or on a machine whose float "
                       "results differ from this one's)")  # fmt: skip
                raise _undecodable(which, b, info, (vqvae_fp, prior_fp), why)
            labels.append(label)
    codes = torch.from_numpy(out.astype(np.int64)).view(len(files), h, w)
    return codes, torch.tensor(labels, dtype=torch.long)


def compress(
    model, prior: CodePrior, images: torch.Tensor, labels=None, *, one_pass: bool = False
) -> list:
    """Compress images (B, C, H, W) float in [0, 1] with ``model`` (a VQ-VAE) and its
    ``prior``: one ``.vqz`` file (bytes) per image. ``labels`` and ``one_pass`` as in
    :func:`compress_codes`. Decoding gives back ``model.decode(model.encode(images))``."""
    coder.coding_prior(prior).check_compatible(model)  # (a TypeError for what is no prior)
    codes = model.encode(images)
    return compress_codes(prior, codes, labels, model=model, one_pass=one_pass)


def decompress(model, prior: CodePrior, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``.vqz`` files (bytes or a list of bytes) made with ``model`` and ``prior``:
    (images (B, C, H, W) float in [0, 1] on the model's device, labels (B,) int64, -1 for
    no class). ValueError as :func:`decompress_codes`."""
    codes, labels = decompress_codes(prior, data, model=model)
    return model.decode(codes.to(model.device)), labels
