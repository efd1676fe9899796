"""The coder: the prior run step by step, its probabilities as integer counts, and range
coding with ``constriction`` (docs/vqz-format.md, "Determinism").

The encoder and the decoder go through the same :class:`_Stepper` on the same
:func:`coding_prior`, under :func:`one_thread`, so both see the very same counts."""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import numpy as np
import torch

from ..prior import CodePrior
from .format import FORMAT_VERSION, weights_key

PROB_BITS = 20  # probabilities are coded as integer multiples of 2^-20 (at least 1)

_CODING = threading.RLock()  # held while a file is coded: see one_thread


@contextmanager
def one_thread():
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


def coding_prior(prior: CodePrior, version: int = FORMAT_VERSION) -> CodePrior:
    """The prior as the coder runs it: on the CPU, in eval mode, with its weights rounded to
    float32 (what prior_fingerprint names) and computed in float64 (versions 2 and 4) or float32
    (version 1). A copy, cached per prior and dtype until its weights change."""
    if not isinstance(prior, CodePrior):
        raise TypeError(f"prior must be a vqvae.CodePrior, got {type(prior).__name__}")
    dtype = torch.float32 if version == 1 else torch.float64
    state = prior.state_dict()
    key = weights_key(state)
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


def full_counts(prior: CodePrior, grid: np.ndarray, label: int) -> np.ndarray:
    """(h*w, K) float64 integer counts of every cell of ``grid`` ((h*w,) ints in raster
    order) from one full-length forward of the prior given ``label`` (-1 = none): what a
    one-pass file (version 5) is coded with. Row t depends only on the class and the codes
    before cell t: attention is causal, so the positions from t on get weights of exactly
    zero, and every other layer works row by row. A grid whose cells from t on hold
    anything else (what the decoder has not read yet) therefore gives row t the same bits,
    as long as the forward has the same shape, one grid of h*w cells, on one thread."""
    h, w = prior.grid
    codes = torch.from_numpy(np.asarray(grid, dtype=np.int64)).view(1, h, w)
    with torch.no_grad():
        logits = prior(codes, None if label < 0 else torch.tensor([label]))[0]
    return quantize_probs(torch.softmax(logits, dim=-1))


def encode(prior: CodePrior, grid: np.ndarray, label: int, *, one_pass: bool = False) -> bytes:
    """The payload of one grid: for a class-conditional prior first the class (0 = none,
    c + 1 = class c, equal probabilities), then the codes ``grid`` ((h*w,) ints in raster
    order) under ``prior`` (a :func:`coding_prior`) given ``label`` (-1 = none); cut to the
    shortest bytes that decode the same. The counts come from the prior stepped cell by
    cell with its key/value cache (versions 2 and 4), or with ``one_pass`` from one
    full-length forward (:func:`full_counts`, version 5). Call it under :func:`one_thread`."""
    import constriction

    if one_pass:
        rows = full_counts(prior, grid, label)
    else:
        stepper, steps = _Stepper(prior, label), []
        for code in grid:
            steps.append(stepper.counts())
            stepper.feed(int(code))
        rows = np.concatenate(steps)
    segments = [(grid.astype(np.int32), rows)]
    if prior.num_classes:
        segments.insert(0, (np.array([label + 1], np.int32), _class_counts(prior)))
    enc = constriction.stream.queue.RangeEncoder()
    for symbols, table in segments:
        enc.encode(symbols, _family(), table)
    return _shortest(enc.get_compressed().astype(">u4").tobytes(), segments)


def decode(
    prior: CodePrior, payload: bytes, label: int | None, *, one_pass: bool = False
) -> tuple[np.ndarray, int]:
    """The codes ((h*w,) int32, raster order) and class (-1 = none) of one payload, as
    :func:`encode` wrote them (``one_pass`` as there): ``label`` None reads the class from
    the payload (versions 2, 4 and 5), an int is the class a version 1 header gives. One-pass
    files are read with a full-length forward per cell, the cells not read yet set to 0
    (:func:`full_counts`). Raises AssertionError (constriction's) for a payload the prior
    cannot have produced. Call it under :func:`one_thread`."""
    import constriction

    dec = constriction.stream.queue.RangeDecoder(_words(payload))
    if label is None:
        label = -1
        if prior.num_classes:
            label = int(dec.decode(_family(), _class_counts(prior))[0]) - 1
    h, w = prior.grid
    out = np.zeros(h * w, dtype=np.int32)
    stepper = None if one_pass else _Stepper(prior, label)
    for t in range(h * w):
        if one_pass:
            counts = full_counts(prior, out, label)[t : t + 1]
        else:
            counts = stepper.counts()
        out[t] = dec.decode(_family(), counts)[0]
        if not one_pass:
            stepper.feed(int(out[t]))
    return out, label
