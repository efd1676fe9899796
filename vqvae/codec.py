"""An image codec: a VQ-VAE's codes, entropy-coded under its prior, in a small ``.vqz`` file.

>>> import vqvae
>>> model, prior = vqvae.load_pretrained("mnist"), vqvae.load_prior("mnist")
>>> files = compress(model, prior, images, labels=3)   # list of bytes, one per image
>>> decoded, labels = decompress(model, prior, files)  # (B, C, H, W) in [0, 1], (B,)

``decoded`` equals ``model.decode(model.encode(images))`` exactly: the codes come back bit
for bit. A file costs about the prior's negative log-likelihood of its codes
(:meth:`vqvae.CodePrior.nll_bits`), plus log2(classes + 1) bits for the class and a 4-byte
header, instead of h*w*log2(K) bits. ``labels="auto"`` picks, per image, the class (or
none) under which the codes cost the fewest bits.

How: the prior gives each code's distribution given the label and the codes before it
(raster order, its key/value cache, as sampling does); the distribution is rounded to
integer counts (multiples of 2^-PROB_BITS, at least one each, so every code stays codable)
and handed to ``constriction``'s range coder (``queue.RangeEncoder`` with
``model.Categorical(perfect=False)``). The decoder runs the very same steps, so it sees the
very same counts. The coder's output is cut to the shortest byte string that still decodes
(trailing bytes past the last one that matters are dropped; the decoder reads zeros there).

Determinism: encoder and decoder must compute the same integer counts. Both drive the prior
through one code path: on the CPU, in eval mode, one grid at a time (a batch of 1), with
torch's intra-op threads pinned to 1 while coding, and in float64 from the float32 weights
(version 2). Another CPU or BLAS may still round differently, but by some 1e-15..1e-13
relative, far below the counts' 2^-20 steps: a count changes only if a probability falls
that close to a rounding edge, which we estimate at well under once in 10,000 files (not
measured: this project has one machine kind). Version 1 computed in float32, whose ~1e-7
errors do reach the counts' steps, so its files decode reliably only on the machine kind
that made them. torch does not promise equal bits across CPUs, so none of this is a
guarantee: where a count differs, the checksum refuses the file rather than showing a wrong
image (but for one damaged file in 65,536).

File format, version 2 (written; 4 bytes of header, since at 20-30 bytes a file's header
is a large part of it)::

    0   1   0xA0 | format version (2): the high nibble 0xA marks a .vqz file
    1   1   ids: the high nibble is the VQ-VAE's (first 4 bits of
            sha256(codebook_fingerprint(model))), the low nibble the prior's (of
            sha256(prior_fingerprint(prior)))
    2   2   checksum: blake2s (2 bytes) of bytes 0-1, both full fingerprints, the class and
            the codes (int32 little-endian, raster order)
    4   .   payload: the range coder's 32-bit words as big-endian bytes, cut short. For a
            class-conditional prior it first codes the class (0 = none, c + 1 = class c)
            with equal probabilities, then the codes under the prior given that class (its
            probabilities computed in float64, rounded to multiples of 2^-PROB_BITS).

The 4-bit ids tell a file for another model or prior apart 15 times in 16; the checksum
catches the rest and any damage but about one file in 65,536 (a damaged file then decodes to
other codes of the same model: a wrong image, never a crash).

Version 1 (read, no longer written: the first session's files): b"VQZ", a version byte,
2-byte VQ-VAE and prior ids, the class as a LEB128 varint (0 = none, c + 1 = class c), a
3-byte blake2s checksum of all that, the full fingerprints and the codes, then the payload
(the codes only, the prior run in float32). 12 bytes of header below 127 classes.

A file for another VQ-VAE or prior, a truncated or corrupted file and an unknown version are
each a ValueError with a message saying which.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import threading
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .prior import CodePrior, codebook_fingerprint

FORMAT_VERSION = 2  # what compress writes; read_header reads 1 and 2
MAGIC_NIBBLE = 0xA  # version 2+: the first byte is 0xA0 | version
HEADER_BYTES = 4  # version 2
CHECKSUM_BYTES = 2  # version 2
V1_MAGIC = b"VQZ"  # version 1
V1_CHECKSUM_BYTES, V1_ID_BYTES = 3, 2
SUFFIX = ".vqz"
PROB_BITS = 20  # probabilities are coded as integer multiples of 2^-20 (at least 1)


# -------------------------------------------------------------------------- fingerprints
_prior_fps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prior_fingerprint(prior: CodePrior) -> str:
    """A short hex digest of what fixes a prior's probabilities: its architecture (K, h, w,
    classes, widths, heads) and its weights as float32. Equal on every machine for equal
    weights; the prior's names and training options do not enter it."""
    state = prior.state_dict()
    key = _weights_key(state)  # hashing the weights takes tens of ms: cached
    hit = _prior_fps.get(prior)
    if hit is not None and hit[0] == key:
        return hit[1]
    c = prior.config
    arch = (c.codebook_size, c.height, c.width, c.num_classes, c.d_model, c.n_layers,
            c.n_heads, c.mlp_ratio)  # fmt: skip
    h = hashlib.sha256(repr(arch).encode())
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    fp = h.hexdigest()[:16]
    _prior_fps[prior] = (key, fp)
    return fp


def _weights_key(state: dict) -> tuple:
    """What changes when a prior's weights do: a tensor replaced, or changed in place (an
    optimizer step bumps its _version). The key of the per-prior caches below."""
    return tuple((k, v.data_ptr(), v._version) for k, v in state.items())


def _short_id(fingerprint: str, bits: int = 4) -> int:
    """The first ``bits`` bits of sha256(fingerprint): 4 in version 2, 16 in version 1."""
    return int.from_bytes(hashlib.sha256(fingerprint.encode()).digest()[:2], "big") >> (16 - bits)


# -------------------------------------------------------------------------- the header
@dataclass(frozen=True)
class FileInfo:
    """What a ``.vqz`` file's header says (see :func:`read_header`)."""

    version: int
    vqvae_id: int  # the first id_bits bits of sha256(the VQ-VAE's codebook fingerprint)
    prior_id: int  # the same of prior_fingerprint
    id_bits: int  # 4 (version 2) or 16 (version 1)
    label: int | None  # class index, -1 = no class; None: coded in the payload (version 2)
    checksum: bytes
    header_bytes: int  # everything before the payload, checksum included
    payload_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a .vqz file must be given as bytes, got {type(data).__name__}")


def read_header(data) -> FileInfo:
    """Parse the header of one ``.vqz`` file (bytes). Raises ValueError for something that
    is not a .vqz file, a file cut short inside its header, or a format version this
    library cannot read. (A version 2 file's class is in its payload: ``label`` is None.)"""
    b = _as_bytes(data)
    if b[:3] == V1_MAGIC[: len(b[:3])] and b:
        return _read_header_v1(b)
    if not b or b[0] >> 4 != MAGIC_NIBBLE:
        raise ValueError("not a .vqz file: its first byte is not a .vqz mark")
    version = b[0] & 0x0F
    if version > FORMAT_VERSION:
        raise ValueError(
            f".vqz format version {version} is newer than this library reads "
            f"({FORMAT_VERSION}); update vqvae"
        )
    if version < 2:
        raise ValueError(f"unknown .vqz format version {version}")
    if len(b) < HEADER_BYTES:
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, less than its header")
    return FileInfo(
        version=version,
        vqvae_id=b[1] >> 4,
        prior_id=b[1] & 0x0F,
        id_bits=4,
        label=None,
        checksum=b[2:HEADER_BYTES],
        header_bytes=HEADER_BYTES,
        payload_bytes=len(b) - HEADER_BYTES,
    )


def _read_header_v1(b: bytes) -> FileInfo:
    if len(b) <= len(V1_MAGIC):
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, less than a header")
    version = b[len(V1_MAGIC)]
    if version != 1:
        raise ValueError(f"unknown .vqz format version {version} (a version 1 mark)")
    fixed = len(V1_MAGIC) + 1 + 2 * V1_ID_BYTES  # bytes before the class varint
    pos, label = fixed, 0
    for shift in range(0, 35, 7):  # a varint of at most 5 bytes
        if pos >= len(b):
            raise ValueError(f"truncated .vqz file: {len(b)} bytes, cut inside its header")
        label |= (b[pos] & 0x7F) << shift
        pos += 1
        if not b[pos - 1] & 0x80:
            break
    else:
        raise ValueError("corrupted .vqz file: its class field is too long")
    if len(b) < pos + V1_CHECKSUM_BYTES:
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, cut inside its header")
    ids = b[len(V1_MAGIC) + 1 : fixed]
    return FileInfo(
        version=1,
        vqvae_id=int.from_bytes(ids[:V1_ID_BYTES], "big"),
        prior_id=int.from_bytes(ids[V1_ID_BYTES:], "big"),
        id_bits=8 * V1_ID_BYTES,
        label=label - 1,
        checksum=b[pos : pos + V1_CHECKSUM_BYTES],
        header_bytes=pos + V1_CHECKSUM_BYTES,
        payload_bytes=len(b) - pos - V1_CHECKSUM_BYTES,
    )


def _checksum(head: bytes, vqvae_fp: str, prior_fp: str, label: int, codes: np.ndarray,
              version: int = FORMAT_VERSION) -> bytes:  # fmt: skip
    if version == 1:  # the class is in ``head``
        h = hashlib.blake2s(head, digest_size=V1_CHECKSUM_BYTES)
        h.update(f"{vqvae_fp}|{prior_fp}".encode())
    else:
        h = hashlib.blake2s(head, digest_size=CHECKSUM_BYTES)
        h.update(f"{vqvae_fp}|{prior_fp}|{label}".encode())
    h.update(codes.astype("<i4").tobytes())
    return h.digest()


# -------------------------------------------------------------------------- the prior, step by step
_CODING = threading.RLock()  # held while a file is coded: see _one_thread


@contextmanager
def _one_thread():
    """torch's intra-op threads pinned to 1: a float result can depend on how a matrix
    product is split across threads, and encoder and decoder must agree to the bit."""
    with _CODING:  # the thread count is process-wide: one coding at a time
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)


_coding_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _coding_prior(prior: CodePrior, version: int = FORMAT_VERSION) -> CodePrior:
    """The prior as the coder runs it: on the CPU, in eval mode, with its weights rounded to
    float32 (what prior_fingerprint names) and computed in float64 (version 2) or float32
    (version 1). A copy, cached per prior and dtype until its weights change."""
    if not isinstance(prior, CodePrior):
        raise TypeError(f"prior must be a vqvae.CodePrior, got {type(prior).__name__}")
    dtype = torch.float32 if version == 1 else torch.float64
    state = prior.state_dict()
    key = _weights_key(state)
    copies = _coding_copies.setdefault(prior, {})  # dtype -> (key, copy)
    hit = copies.get(dtype)
    if hit is not None and hit[0] == key:
        return hit[1]
    copy = CodePrior(prior.config)
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32)
                          for k, v in state.items()})  # fmt: skip
    copy = copy.to(dtype).eval()
    copies[dtype] = (key, copy)
    return copy


def quantize_probs(probs: torch.Tensor) -> np.ndarray:
    """(n, K) float probabilities -> (n, K) float64 integer counts: each rounded to a
    multiple of 2^-PROB_BITS, at least 1 (every code stays codable). Exact float64 math,
    so equal inputs give equal counts everywhere."""
    p = probs.detach().to("cpu", torch.float64).numpy()
    return np.maximum(np.rint(p * float(1 << PROB_BITS)), 1.0)


class _Stepper:
    """The prior's distribution of one grid's cells, one at a time: the encoder and the
    decoder both go through this class, so they make the same calls in the same order."""

    def __init__(self, prior: CodePrior, label: int):
        self.prior = prior
        self.state = prior.start(None if label < 0 else label, 1)

    def counts(self) -> np.ndarray:
        """(1, K) float64 integer counts of the current cell."""
        return quantize_probs(self.state.probs)

    def feed(self, code: int) -> None:
        self.prior.step(self.state, torch.tensor([code], dtype=torch.long))


def _family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def _words(payload: bytes) -> np.ndarray:
    """Big-endian bytes -> uint32 words for the decoder, zero-padded (zeros are what the
    encoder's cut dropped, and what the decoder reads past the end anyway)."""
    padded = payload + bytes(-len(payload) % 4 + 8)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def class_bits(prior: CodePrior) -> float:
    """Bits a file spends on its class: log2(classes + 1), the class (or none) being coded
    with equal probabilities; 0 for an unconditional prior."""
    return math.log2(prior.num_classes + 1) if prior.num_classes else 0.0


def _class_counts(prior: CodePrior) -> np.ndarray:
    """(1, classes + 1) equal counts: the class symbol (0 = none, c + 1 = class c)."""
    return np.ones((1, prior.num_classes + 1))


def _decodes_to(payload: bytes, segments) -> bool:
    """Whether ``payload`` decodes to each (symbols, counts table) of ``segments`` in turn."""
    import constriction

    dec = constriction.stream.queue.RangeDecoder(_words(payload))
    try:
        return all(np.array_equal(dec.decode(_family(), table), symbols)
                   for symbols, table in segments)  # fmt: skip
    except AssertionError:  # constriction's word for data its model cannot have produced
        return False


def _ceil_prefix(stream: bytes, n: int) -> bytes | None:
    """The smallest n-byte string whose zero-padded value is >= ``stream``'s (None if that
    takes more than n bytes), without trailing zero bytes."""
    head = stream[:n]
    if any(stream[n:]):
        if head == b"\xff" * n:
            return None
        head = (int.from_bytes(head, "big") + 1).to_bytes(n, "big")
    return head.rstrip(b"\0")


def _shortest(stream: bytes, segments) -> bytes:
    """The shortest byte string that still decodes to ``segments`` (see _decodes_to).

    The range coder ends its output with a whole 32-bit word; any value in its final
    interval decodes the same. Rounding the output *up* to fewer bytes stays in the interval
    down to some length and leaves it below (the rounded values shrink towards the
    output's), so trying lengths from long to short finds the shortest. A cut of the result
    by even one byte rounds it down, below the interval, and decodes other codes."""
    best = stream.rstrip(b"\0")
    for n in range(len(best) - 1, -1, -1):
        cand = _ceil_prefix(stream, n)
        if cand is None or not _decodes_to(cand, segments):
            break
        best = cand
    return best


# -------------------------------------------------------------------------- public API
def _check_codes(prior: CodePrior, codes) -> torch.Tensor:
    h, w = prior.grid
    if not torch.is_tensor(codes) or codes.is_floating_point() or codes.is_complex():
        raise TypeError(f"codes must be an integer tensor of shape (B, {h}, {w})")
    if codes.dim() != 3 or tuple(codes.shape[1:]) != (h, w):
        raise ValueError(
            f"codes must have shape (B, {h}, {w}) for this prior, got {tuple(codes.shape)}"
        )
    K = prior.codebook_size
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= K):
        raise ValueError(
            f"codes must be in [0, {K - 1}], got values in [{int(codes.min())}, {int(codes.max())}]"
        )
    return codes.detach().to("cpu", torch.long)


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


def cheapest_labels(prior: CodePrior, codes: torch.Tensor) -> list[int]:
    """Per grid, the class (or -1, none) under which the prior gives ``codes`` the fewest
    bits: what ``labels="auto"`` codes. Every class costs the same log2(classes + 1) bits
    in a file, so this is the cheapest file. (-1 for every grid of an unconditional prior.)"""
    codes = _check_codes(prior, codes)
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


def compress_codes(prior: CodePrior, codes: torch.Tensor, labels=None, *, model=None) -> list:
    """Entropy-code code grids ``codes`` (B, h, w) int in [0, K) under ``prior``: one
    ``.vqz`` file (bytes) per grid.

    ``labels``: None (no class), an int for every grid, ints (B,) with -1 for no class
    on that grid, or ``"auto"``: per grid the class (or none) that makes the file smallest
    (:func:`cheapest_labels`). With a class-conditional prior the class costs
    log2(classes + 1) bits and comes back from :func:`decompress_codes`; the right one
    makes the codes cheaper. ``model`` (the VQ-VAE) is checked against the prior and
    fingerprinted into the header; without it, the fingerprint the prior's config names is
    used. Costs h*w steps of the prior per grid, on the CPU."""
    cp = _coding_prior(prior)
    vqvae_fp = _vqvae_fp(cp, model)
    codes = _check_codes(cp, codes)
    if isinstance(labels, str) and labels == "auto":
        labels = cheapest_labels(cp, codes)
    labels = _label_list(cp, labels, len(codes))
    prior_fp = prior_fingerprint(prior)
    head = bytes([MAGIC_NIBBLE << 4 | FORMAT_VERSION,
                  _short_id(vqvae_fp) << 4 | _short_id(prior_fp)])  # fmt: skip
    import constriction

    files = []
    with _one_thread():
        for grid, label in zip(codes.reshape(len(codes), -1).numpy(), labels, strict=True):
            stepper, rows = _Stepper(cp, label), []
            for code in grid:
                rows.append(stepper.counts())
                stepper.feed(int(code))
            symbols = grid.astype(np.int32)
            segments = [(symbols, np.concatenate(rows))]
            if cp.num_classes:
                segments.insert(0, (np.array([label + 1], np.int32), _class_counts(cp)))
            enc = constriction.stream.queue.RangeEncoder()
            for syms, table in segments:
                enc.encode(syms, _family(), table)
            stream = enc.get_compressed().astype(">u4").tobytes()
            check = _checksum(head, vqvae_fp, prior_fp, label, symbols)
            files.append(head + check + _shortest(stream, segments))
    return files


def _file_list(data) -> list[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [bytes(data)]
    if isinstance(data, (str, Path)) or not isinstance(data, Iterable):
        raise TypeError(
            f"data must be the bytes of a .vqz file or a list of them, got {type(data).__name__}"
        )
    return [_as_bytes(d) for d in data]


def decompress_codes(prior: CodePrior, data, *, model=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``.vqz`` files (bytes, or a list of bytes) written by :func:`compress_codes`
    with this ``prior`` (and ``model``, the VQ-VAE, if given; checked against the prior).

    Returns (codes (B, h, w) int64, labels (B,) int64 with -1 for no class). Raises
    ValueError for a file made with another VQ-VAE or prior, a truncated or corrupted file
    (its checksum does not match the decoded codes), or an unknown format version."""
    files = _file_list(data)
    cp = _coding_prior(prior)
    vqvae_fp = _vqvae_fp(cp, model)
    prior_fp = prior_fingerprint(prior)
    infos = [read_header(b) for b in files]  # every header checked before any decoding
    name = cp.config.vqvae_name or "this model"
    for i, info in enumerate(infos):
        which = f"file {i}" if len(files) > 1 else "the file"
        ours = _short_id(vqvae_fp, info.id_bits)
        if info.vqvae_id != ours:
            raise ValueError(
                f"{which} was made with another VQ-VAE (id {info.vqvae_id:x}), not with "
                f"{name} (id {ours:x}): decode it with the model it was compressed with"
            )
        ours = _short_id(prior_fp, info.id_bits)
        if info.prior_id != ours:
            raise ValueError(
                f"{which} was made with another prior (id {info.prior_id:x}) than this one "
                f"(id {ours:x}) for {name}: decode it with the prior it was compressed with"
            )
        if info.label is not None and not -1 <= info.label < cp.num_classes:
            raise ValueError(
                f"corrupted .vqz file: {which} names class {info.label}, the prior has "
                f"{cp.num_classes} classes"
            )
    import constriction

    h, w = cp.grid
    out = np.empty((len(files), h * w), dtype=np.int32)
    labels = []
    with _one_thread():
        for i, (b, info) in enumerate(zip(files, infos, strict=True)):
            dec = constriction.stream.queue.RangeDecoder(_words(b[info.header_bytes :]))
            which = f"file {i}" if len(files) > 1 else "the file"
            try:
                label = info.label
                if label is None:  # version 2: the class is the payload's first symbol
                    label = -1
                    if cp.num_classes:
                        label = int(dec.decode(_family(), _class_counts(cp))[0]) - 1
                stepper = _Stepper(_coding_prior(prior, info.version), label)
                for t in range(h * w):
                    out[i, t] = dec.decode(_family(), stepper.counts())[0]
                    stepper.feed(int(out[i, t]))
            except AssertionError as e:  # constriction: data its model cannot have produced
                raise ValueError(
                    f"corrupted or truncated .vqz file: {which}'s payload cannot be decoded"
                ) from e
            head = b[: info.header_bytes - len(info.checksum)]
            if _checksum(head, vqvae_fp, prior_fp, label, out[i], info.version) != info.checksum:
                raise ValueError(
                    f"corrupted or truncated .vqz file: {which}'s checksum does not match "
                    "its decoded codes (or it was made with another model or prior, or on a "
                    "machine whose float results differ from this one's)"
                )
            labels.append(label)
    codes = torch.from_numpy(out.astype(np.int64)).view(len(files), h, w)
    return codes, torch.tensor(labels, dtype=torch.long)


def compress(model, prior: CodePrior, images: torch.Tensor, labels=None) -> list:
    """Compress images (B, C, H, W) float in [0, 1] with ``model`` (a VQ-VAE) and its
    ``prior``: one ``.vqz`` file (bytes) per image. ``labels`` as in
    :func:`compress_codes`. Decoding gives back ``model.decode(model.encode(images))``."""
    _coding_prior(prior).check_compatible(model)  # (a TypeError for what is no prior)
    codes = model.encode(images)
    return compress_codes(prior, codes, labels, model=model)


def decompress(model, prior: CodePrior, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``.vqz`` files (bytes or a list of bytes) made with ``model`` and ``prior``:
    (images (B, C, H, W) float in [0, 1] on the model's device, labels (B,) int64, -1 for
    no class). ValueError as :func:`decompress_codes`."""
    codes, labels = decompress_codes(prior, data, model=model)
    return model.decode(codes.to(model.device)), labels


# -------------------------------------------------------------------------- JPEG and WebP
# What a .vqz file is compared with: the classic codecs at the same size. At a few dozen
# bytes a JPEG's header alone (quantization and Huffman tables) outweighs a whole .vqz, so
# sizes are matched either on whole files or on the entropy-coded data alone.
FORMATS = ("jpeg", "webp")


@dataclass(frozen=True)
class SizeMatch:
    """A JPEG or WebP file of an image at the quality closest to a target size."""

    format: str  # "jpeg" or "webp"
    quality: int  # 1..100
    data: bytes  # the whole file
    data_bytes: int  # its entropy-coded data, without headers (entropy_coded_bytes)
    image: np.ndarray  # the file decoded: uint8, the input's shape

    @property
    def file_bytes(self) -> int:
        return len(self.data)


def _uint8_image(image) -> np.ndarray:
    if torch.is_tensor(image):
        if image.dim() == 4 and len(image) == 1:
            image = image[0]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image must be (C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
        from .images import to_uint8

        return to_uint8(image)
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError("image must be uint8 (H, W) or (H, W, 3), or a float (C, H, W) tensor")
    return a


def encode_classic(image, fmt: str, quality: int) -> bytes:
    """A JPEG (optimized Huffman tables, PIL's default 4:2:0 chroma) or lossy WebP (method 6)
    file of ``image`` (uint8 (H, W) or (H, W, 3), or a float (C, H, W) tensor in [0, 1])."""
    import io

    import PIL.Image

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    buf = io.BytesIO()
    im = PIL.Image.fromarray(_uint8_image(image))
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality, optimize=True)
    else:
        im.save(buf, "WEBP", quality=quality, method=6)
    return buf.getvalue()


def entropy_coded_bytes(data: bytes) -> int:
    """Bytes of a JPEG's or lossy WebP's entropy-coded data, without headers.

    JPEG: the scan data, from the end of each SOS segment's header to the next marker that
    is neither a stuffed 0xFF00 nor a restart marker (tables, frame header and JFIF/EXIF
    segments are header). WebP: the VP8 chunk's data minus its 10-byte frame header (the
    12-byte RIFF header, the 8-byte chunk header and any other chunk are header)."""
    if data[:2] == b"\xff\xd8":
        i, total = 2, 0
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError(f"not a JPEG marker at byte {i}")
            marker = data[i + 1]
            if marker == 0xD9:  # EOI
                break
            start = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            if marker != 0xDA:  # any segment but SOS is header
                i = start
                continue
            k = data.find(b"\xff", start)
            # a stuffed 0xFF data byte (FF 00) or a restart marker (FF D0..D7): still scan data
            while 0 <= k < len(data) - 1 and (data[k + 1] == 0 or 0xD0 <= data[k + 1] <= 0xD7):
                k = data.find(b"\xff", k + 2)
            if k < 0 or k == len(data) - 1:
                raise ValueError("truncated JPEG file: its scan data has no end marker")
            total += k - start
            i = k
        return total
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        i = 12
        while i + 8 <= len(data):
            fourcc, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
            if fourcc == b"VP8 ":
                return size - 10
            i += 8 + size + (size & 1)
        raise ValueError("no lossy VP8 chunk in this WebP file")
    raise ValueError("not a JPEG or WebP file")


def match_size(image, target_bytes: float, fmt: str = "jpeg", *, headerless: bool = False):
    """The ``fmt`` ("jpeg" or "webp") file of ``image`` at the quality in 1..100 that brings
    it closest to ``target_bytes``: the whole file's size, or with ``headerless`` its
    entropy-coded data's (:func:`entropy_coded_bytes`). Ties go to the lower quality. The
    lowest quality may still be larger than a tiny target; the result says what it reached.
    Returns a :class:`SizeMatch`. Binary search (size grows with quality, nearly always),
    then the neighbours: about ten encodes."""
    import io

    import PIL.Image

    image = _uint8_image(image)
    cache: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in cache:
            cache[q] = encode_classic(image, fmt, q)
        return entropy_coded_bytes(cache[q]) if headerless else len(cache[q])

    lo, hi = 1, 100
    while lo < hi:  # the lowest quality whose size reaches the target
        mid = (lo + hi) // 2
        if size(mid) >= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    near = range(max(1, lo - 2), min(100, lo + 2) + 1)
    q = min(near, key=lambda q: (abs(size(q) - target_bytes), q))
    decoded = PIL.Image.open(io.BytesIO(cache[q])).convert("L" if image.ndim == 2 else "RGB")
    return SizeMatch(fmt, q, cache[q], entropy_coded_bytes(cache[q]), np.asarray(decoded))


# -------------------------------------------------------------------------- command line
def _pretrained_pairs():
    """(folder) of every shipped model that has a prior."""
    from .checkpoint import PRETRAINED_DIR, WEIGHTS_NAME
    from .prior import PRIOR_WEIGHTS

    roots = [PRETRAINED_DIR, Path.cwd() / "pretrained"]
    seen, out = set(), []
    for root in roots:
        for d in sorted(root.glob("*")) if root.is_dir() else []:
            if (d / WEIGHTS_NAME).is_file() and (d / PRIOR_WEIGHTS).is_file():
                if d.resolve() not in seen:
                    seen.add(d.resolve())
                    out.append(d)
    return out


def _load_pair(model_name, prior_name):
    from .model import load_pretrained
    from .prior import load_prior

    model = load_pretrained(model_name)
    return model, load_prior(prior_name or model_name, model=model)


def _decode_shipped(data: bytes, loaded: dict):
    """Decode a file with the shipped (model, prior) its header names: (images, labels,
    prior). The 4-bit ids of version 2 can name two shipped pairs; the checksum tells."""
    info = read_header(data)
    error = None
    for d in _pretrained_pairs():
        if d not in loaded:
            loaded[d] = _load_pair(d, None)
        model, prior = loaded[d]
        ids = (_short_id(codebook_fingerprint(model), info.id_bits),
               _short_id(prior_fingerprint(prior), info.id_bits))  # fmt: skip
        if ids != (info.vqvae_id, info.prior_id):
            continue
        try:
            return (*decompress(model, prior, data), prior)
        except ValueError as e:
            error = e
    if error is not None:
        raise error
    names = ", ".join(d.name for d in _pretrained_pairs()) or "none has a prior"
    raise ValueError(
        f"no shipped model with a prior matches this file ({names}): pass --model "
        "(and --prior) naming the ones it was compressed with"
    )


def _parse_label(prior: CodePrior, text):
    if text is None or text == "auto":
        return "auto"
    if text == "none":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    names = prior.config.class_names
    if text in names:
        return names.index(text)
    raise ValueError(
        f"unknown class {text!r}: give an index or one of {', '.join(names) or '(none)'}"
    )


def _outputs(inputs: list[str], out_dir: Path, suffix: str) -> list[Path]:
    paths = [out_dir / (Path(p).stem + suffix) for p in inputs]
    if len(set(paths)) != len(paths):
        raise ValueError("two inputs have the same file name stem; their outputs would clash")
    return paths


def _compress_cli(a) -> None:
    from .files import atomic_write
    from .images import load_image, to_model_input

    model, prior = _load_pair(a.model, a.prior)
    label = _parse_label(prior, a.label)
    c = model.config
    x = torch.cat([to_model_input(load_image(p)[0], c.in_channels, c.image_size)[0]
                   for p in a.images])  # fmt: skip
    out_dir = Path(a.out)
    paths = _outputs(a.images, out_dir, SUFFIX)
    codes = model.encode(x)
    if label == "auto":
        label = cheapest_labels(prior, codes)
    files = compress_codes(prior, codes, label, model=model)
    nll = prior.nll_bits(codes, label).tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = prior.config.uniform_bits / 8
    for src, path, b, bits in zip(a.images, paths, files, nll, strict=True):
        with atomic_write(path) as f:
            f.write(b)
        info = read_header(b)
        print(
            f"{src} -> {path}: {len(b)} bytes ({info.header_bytes} header + "
            f"{info.payload_bytes} payload); prior NLL {bits:.1f} bits = {bits / 8:.1f} "
            f"bytes; plain codes {plain:.1f} bytes"
        )


def _decompress_cli(a) -> None:
    import PIL.Image

    from .files import atomic_write
    from .images import to_uint8

    out_dir = Path(a.out)
    paths = _outputs(a.files, out_dir, ".png")
    fixed = _load_pair(a.model, a.prior) if a.model else None
    loaded: dict = {}
    results = []
    for src in a.files:
        b = Path(src).read_bytes()
        try:
            if fixed:
                images, labels = decompress(*fixed, b)
                prior = fixed[1]
            else:
                images, labels, prior = _decode_shipped(b, loaded)
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from e
        results.append((images[0], int(labels[0]), prior))
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, path, (image, label, prior) in zip(a.files, paths, results, strict=True):
        with atomic_write(path) as f:
            PIL.Image.fromarray(to_uint8(image)).save(f, format="PNG")
        cls = "" if label < 0 else f" (class {prior.config.class_name(label)})"
        print(f"{src} -> {path}{cls}")


def main(argv=None) -> None:
    """``python -m vqvae.codec compress IMAGE... --model NAME -o DIR`` and
    ``python -m vqvae.codec decompress FILE.vqz... -o DIR``."""
    p = argparse.ArgumentParser(
        prog="python -m vqvae.codec",
        description="Compress images to .vqz files with a VQ-VAE and its prior, and back.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="images -> DIR/<name>.vqz")
    c.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    c.add_argument("--model", required=True, help="VQ-VAE name (pretrained/<name>) or folder")
    c.add_argument("--prior", help="prior name or folder (default: the model's)")
    c.add_argument(
        "--label",
        help="class index or name for every image, 'none', or 'auto' (default): per image "
        "the class that makes its file smallest",
    )
    c.add_argument("-o", "--out", required=True, help="output folder")
    d = sub.add_parser("decompress", help=".vqz files -> DIR/<name>.png")
    d.add_argument("files", nargs="+", help=".vqz files")
    d.add_argument(
        "--model", help="VQ-VAE name or folder (default: the shipped model the file names)"
    )
    d.add_argument("--prior", help="prior name or folder (default: the model's)")
    d.add_argument("-o", "--out", required=True, help="output folder")
    a = p.parse_args(argv)
    try:
        (_compress_cli if a.command == "compress" else _decompress_cli)(a)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
