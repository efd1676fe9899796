"""The ``.vqz`` file format: header, ids, checksum, fingerprints (docs/vqz-format.md).

Thumbnails: versions 1, 2, 4 and 5 are read; version 4 is written, and version 5 for
one-pass coding (version 3 is a photo's, :mod:`vqvae.codec.photo`). Nothing here runs the
prior: what a header says, what names a model or prior, and what a file's checksum covers.

Why version 4: version 2 named the VQ-VAE and the prior with 4-bit ids each, and two shipped
VQ-VAEs (mnist's and cifar10's) share one, so a cifar10 file decoded with mnist was refused
for its prior only. Version 4 keeps version 2's 4-byte header and spends its id byte on one
8-bit id of the (VQ-VAE, prior) pair (:func:`pair_id`): the shipped pairs' ids all differ
(d3, 57, 05; a test checks), so a file decoded with another shipped model is refused by its
header, and the model that made it is found by decoding the file with each pair of its id
and keeping the one whose checksum matches (:mod:`vqvae.codec.owners`, as for version 2).
That keeps the MNIST goal, a file under half of the plain codes: on 1000 test images 27.3
bytes, 0.495 of the plain 55.1 (BENCHMARKS.md section 10). The alternative weighed: 12-bit
ids of the VQ-VAE and of the prior (version 3's) name both before anything is decoded, but
cost 2 bytes a file, 29.3 bytes on MNIST (0.531, past the goal). What an 8-bit pair id
gives up: among ten models two pairs share an id one time in six (their files are told
apart by the checksum, as above), and a header alone cannot say whether the VQ-VAE or only
the prior differs (decoding with the pair that made the file tells).

Version 5 is version 4's layout under another mark: its counts come from one full-length
forward of the prior (:func:`vqvae.codec.coder.full_counts`) instead of the prior stepped
cell by cell, so the encoder, which knows every code, runs the prior once (MNIST: ~15 ms
instead of ~150), while the decoder runs one full forward per cell (~5x the stepped
decoding). The two ways give different float bits, so a file says which it used."""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ..config import hash_weights
from ..prior import CodePrior

FORMAT_VERSION = 4  # what compress writes; read_header reads 1, 2, 4 and 5
ONE_PASS_VERSION = 5  # what compress(one_pass=True) writes: version 4's layout
MAGIC_NIBBLE = 0xA  # version 2+: the first byte is 0xA0 | version
ID_BITS = 12  # per id, version 3: 4096 values, so models and priors rarely share one
PAIR_ID_BITS = 8  # version 4: one id for the (VQ-VAE, prior) pair
HEADER_BYTES = 4  # versions 2, 4 and 5: the mark, 1 byte of ids, the checksum
CHECKSUM_BYTES = 2  # versions 2 to 5
PAIR_VERSIONS = (4, 5)  # one 8-bit id of the (VQ-VAE, prior) pair
V2_ID_BITS = 4
V1_MAGIC = b"VQZ"  # version 1
V1_CHECKSUM_BYTES, V1_ID_BYTES = 3, 2
SUFFIX = ".vqz"


# -------------------------------------------------------------------------- fingerprints
def weights_key(state: dict) -> tuple:
    """What changes when a prior's weights do: a tensor replaced, or changed in place. An
    optimizer step bumps a tensor's version counter; an inference tensor (made under
    ``torch.inference_mode()``) has none, so its bytes are hashed instead (about 15 ms for
    3 M parameters). The key of the per-prior caches of this package."""
    return tuple(
        (k, v.data_ptr(), _bytes_digest(v) if v.is_inference() else v._version)
        for k, v in state.items()
    )


def _bytes_digest(t: torch.Tensor) -> bytes:
    raw = t.detach().to("cpu").contiguous().view(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy()).digest()


_prior_fps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prior_fingerprint(prior: CodePrior) -> str:
    """A short hex digest of what fixes a prior's probabilities: its architecture (K, h, w,
    classes, widths, heads) and its weights as float32. Equal on every machine for equal
    weights; the prior's names and training options do not enter it."""
    state = prior.state_dict()
    key = weights_key(state)  # hashing the weights as float32 takes tens of ms: cached
    hit = _prior_fps.get(prior)
    if hit is not None and hit[0] == key:
        return hit[1]
    c = prior.config
    arch = (c.codebook_size, c.height, c.width, c.num_classes, c.d_model, c.n_layers,
            c.n_heads, c.mlp_ratio)  # fmt: skip
    h = hashlib.sha256(repr(arch).encode())
    hash_weights(h, state)
    fp = h.hexdigest()[:16]
    _prior_fps[prior] = (key, fp)
    return fp


def short_id(fingerprint: str, bits: int) -> int:
    """The first ``bits`` (1 to 16) bits of sha256(fingerprint): the id a file gives a
    model or prior, 12 bits in version 3, 4 in version 2, 16 in version 1 (and
    :func:`pair_id`'s 8 bits in version 4)."""
    return int.from_bytes(hashlib.sha256(fingerprint.encode()).digest()[:2], "big") >> (16 - bits)


def pair_id(vqvae_fp: str, prior_fp: str) -> int:
    """The 8-bit id a version 4 file gives its (VQ-VAE, prior) pair, 0 to 255: the
    :func:`short_id` of both fingerprints joined as the checksum joins them."""
    return short_id(f"{vqvae_fp}|{prior_fp}", PAIR_ID_BITS)


def id_bytes(vqvae_fp: str, prior_fp: str) -> bytes:
    """The 3 id bytes of version 3: the VQ-VAE's 12-bit id, then the prior's."""
    return (short_id(vqvae_fp, ID_BITS) << ID_BITS | short_id(prior_fp, ID_BITS)).to_bytes(3, "big")


def split_ids(b: bytes) -> tuple[int, int]:
    """(VQ-VAE id, prior id) of the 3 id bytes :func:`id_bytes` writes."""
    ids = int.from_bytes(b[:3], "big")
    return ids >> ID_BITS, ids & ((1 << ID_BITS) - 1)


# -------------------------------------------------------------------------- the header
class ForeignFileError(ValueError):
    """A ``.vqz`` file made with another VQ-VAE or prior than the ones given (or, for a
    version 2 or 4 file, whose narrow ids several pairs may share, one that does not decode
    with them). ``reason`` says what differs; ``data`` is the file, ``tried`` the fingerprints
    (vqvae_fp, prior_fp) it was tried with. The message adds which shipped model made the
    file (:mod:`vqvae.codec.owners`), looked up when it is first read, so a caller that
    answers with its own candidates does not load the shipped models."""

    def __init__(self, reason: str, data: bytes = b"", tried: tuple | None = None):
        super().__init__(reason)
        self.reason, self.data, self.tried = reason, data, tried
        self._message: str | None = None

    def __str__(self) -> str:
        if self._message is None:
            from .owners import shipped_note  # it decodes with the api, which raises this

            try:
                self._message = f"{self.reason}; {shipped_note(self.data, self.tried)}"
            except Exception:  # a message must not fail: the reason alone, then
                self._message = self.reason
        return self._message


@dataclass(frozen=True)
class FileInfo:
    """What a ``.vqz`` file's header says (see :func:`read_header`)."""

    version: int
    vqvae_id: int | None  # the first id_bits bits of sha256(the VQ-VAE's codebook
    prior_id: int | None  # fingerprint), the same of prior_fingerprint; None in version 4
    id_bits: int  # 8 (version 4 and 5's pair id), 4 (version 2) or 16 (version 1)
    label: int | None  # class index, -1 = no class; None: coded in the payload (versions 2+)
    checksum: bytes
    header_bytes: int  # everything before the payload, checksum included
    payload_bytes: int
    pair_id: int | None = None  # versions 4 and 5: pair_id of the two fingerprints

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    @property
    def ids(self) -> tuple[int, ...]:
        """The ids the header gives: (pair id,) in versions 4 and 5, else (VQ-VAE id, prior
        id)."""
        if self.version in PAIR_VERSIONS:
            return (self.pair_id,)
        return self.vqvae_id, self.prior_id

    @property
    def one_pass(self) -> bool:
        """Whether the counts come from one full-length forward of the prior (version 5)."""
        return self.version == ONE_PASS_VERSION

    def ids_for(self, vqvae_fp: str, prior_fp: str) -> tuple[int, ...]:
        """The ids a file of this version has for these fingerprints, as :attr:`ids`: equal
        to them when the file may be theirs."""
        if self.version in PAIR_VERSIONS:
            return (pair_id(vqvae_fp, prior_fp),)
        return short_id(vqvae_fp, self.id_bits), short_id(prior_fp, self.id_bits)


def as_bytes(data) -> bytes:
    """One file's bytes; a TypeError for anything that is not bytes-like."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a .vqz file must be given as bytes, got {type(data).__name__}")


def read_header(data) -> FileInfo:
    """Parse the header of one ``.vqz`` file (bytes). Raises ValueError for something that
    is not a .vqz file, a file cut short inside its header, or a format version this
    library cannot read. (A version 2, 4 or 5 file's class is in its payload: ``label`` is
    None.)"""
    b = as_bytes(data)
    if b[:3] == V1_MAGIC[: len(b[:3])] and b:
        return _read_header_v1(b)
    if not b or b[0] >> 4 != MAGIC_NIBBLE:
        raise ValueError("not a .vqz file: its first byte is not a .vqz mark")
    version = b[0] & 0x0F
    if version == 3:
        raise ValueError(
            "a version 3 .vqz file (an image of any size, coded under a grid prior): read it "
            "with vqvae.codec.decompress_image"
        )
    if version > ONE_PASS_VERSION:
        raise ValueError(
            f".vqz format version {version} is newer than this library reads "
            f"({ONE_PASS_VERSION}); update vqvae"
        )
    if version < 2:
        raise ValueError(f"unknown .vqz format version {version}")
    size = HEADER_BYTES
    if len(b) < size:
        raise ValueError(f"truncated .vqz file: {len(b)} bytes, less than its header")
    v4 = version in PAIR_VERSIONS
    return FileInfo(
        version=version,
        vqvae_id=None if v4 else b[1] >> 4,
        prior_id=None if v4 else b[1] & 0x0F,
        id_bits=PAIR_ID_BITS if v4 else V2_ID_BITS,
        label=None,
        checksum=b[size - CHECKSUM_BYTES : size],
        header_bytes=size,
        payload_bytes=len(b) - size,
        pair_id=b[1] if v4 else None,
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


def head_bytes(vqvae_fp: str, prior_fp: str, version: int = FORMAT_VERSION) -> bytes:
    """The header before the checksum: the mark and version, then 1 byte of ids: the pair's
    8-bit id (versions 4 and 5), or 4 bits each of the VQ-VAE's and the prior's (version 2, which is
    no longer written; kept for tests of reading it)."""
    mark = bytes([MAGIC_NIBBLE << 4 | version])
    if version == 2:
        return mark + bytes([short_id(vqvae_fp, V2_ID_BITS) << 4 | short_id(prior_fp, V2_ID_BITS)])
    if version not in PAIR_VERSIONS:
        raise ValueError(f"no header of version {version} is written here")
    return mark + bytes([pair_id(vqvae_fp, prior_fp)])


def checksum(head: bytes, vqvae_fp: str, prior_fp: str, label: int, codes: np.ndarray,
             version: int = FORMAT_VERSION) -> bytes:  # fmt: skip
    """The checksum of a file whose header before the checksum is ``head``: blake2s of
    ``head``, both fingerprints, the class (versions 2, 4 and 5; version 1's is in ``head``)
    and the codes ((h*w,) ints, as int32 little-endian)."""
    if version == 1:  # the class is in ``head``
        h = hashlib.blake2s(head, digest_size=V1_CHECKSUM_BYTES)
        h.update(f"{vqvae_fp}|{prior_fp}".encode())
    else:
        h = hashlib.blake2s(head, digest_size=CHECKSUM_BYTES)
        h.update(f"{vqvae_fp}|{prior_fp}|{label}".encode())
    h.update(codes.astype("<i4").tobytes())
    return h.digest()
