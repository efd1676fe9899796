"""An image codec: a VQ-VAE's codes, entropy-coded under its prior, in a small ``.vqz`` file.

>>> import vqvae
>>> model, prior = vqvae.load_pretrained("mnist"), vqvae.load_prior("mnist")
>>> files = compress(model, prior, images, labels=3)   # list of bytes, one per image
>>> decoded, labels = decompress(model, prior, files)  # (B, C, H, W) in [0, 1], (B,)

``decoded`` equals ``model.decode(model.encode(images))`` exactly: the codes come back bit
for bit. A file costs about the prior's negative log-likelihood of its codes
(:meth:`vqvae.CodePrior.nll_bits`), plus log2(classes + 1) bits for the class and a 4-byte
header, instead of h*w*log2(K) bits. ``labels="auto"`` picks, per image, the class (or
none) under which the codes cost the fewest bits. ``one_pass=True`` writes version 5,
whose encoder runs the prior once per image (its decoder once per cell).

The file format (byte layout of versions 1 to 5, ids, checksum), what is refused, and the
rules that make encoder and decoder agree to the bit: ``docs/vqz-format.md``. A file decoded
with the wrong model raises :class:`ForeignFileError`, whose message names the shipped model
that made it (:func:`identify`).

Images of any size (photos) go through :func:`compress_image` / :func:`decompress_image`:
format version 3, coded under a :class:`vqvae.GridPrior` at one of the model's
:func:`rates`, the image size in the header.

Modules: ``format`` (header, ids, checksum, fingerprints), ``coder`` (the prior step by
step, integer counts, range coding), ``api`` (compress and decompress), ``photo`` (format
3), ``owners`` (which model made a file), ``points`` (the operating points rate-distortion
curves are drawn from), ``cli`` (``python -m vqvae.codec compress|decompress``).
"""

from .api import (
    cheapest_labels,
    class_bits,
    compress,
    compress_codes,
    decompress,
    decompress_codes,
)
from .cli import main
from .coder import PROB_BITS, quantize_probs
from .format import (
    CHECKSUM_BYTES,
    FORMAT_VERSION,
    HEADER_BYTES,
    ID_BITS,
    MAGIC_NIBBLE,
    SUFFIX,
    V1_CHECKSUM_BYTES,
    V1_ID_BYTES,
    V1_MAGIC,
    FileInfo,
    ForeignFileError,
    prior_fingerprint,
    read_header,
)
from .owners import Identity, identify
from .photo import Rate, compress_image, decompress_image, rates, read_photo_header
from .points import OperatingPoint, operating_points
from .rdo import RDO_WEIGHT
from .refine import REFINE_STEPS

__all__ = [
    "compress",
    "decompress",
    "compress_image",
    "decompress_image",
    "rates",
    "Rate",
    "read_photo_header",
    "compress_codes",
    "decompress_codes",
    "cheapest_labels",
    "class_bits",
    "operating_points",
    "OperatingPoint",
    "read_header",
    "FileInfo",
    "ForeignFileError",
    "identify",
    "Identity",
    "prior_fingerprint",
    "quantize_probs",
    "main",
    "FORMAT_VERSION",
    "MAGIC_NIBBLE",
    "HEADER_BYTES",
    "ID_BITS",
    "CHECKSUM_BYTES",
    "V1_MAGIC",
    "V1_CHECKSUM_BYTES",
    "V1_ID_BYTES",
    "SUFFIX",
    "PROB_BITS",
    "RDO_WEIGHT",
    "REFINE_STEPS",
]
