"""Which model made a ``.vqz`` file: the pair (VQ-VAE, prior) among some candidates whose
ids the file's header gives, so that a file decoded with the wrong model is answered with
the one to use (the library, ``python -m vqvae.codec decompress`` and the app all ask
:func:`identify`; each says in its own words what to do with the answer).

A file's ids are the first bits of sha256 of its pair's fingerprints
(:func:`vqvae.codec.format.short_id`). With 12 or 16 bits for each of the two (versions 1
and 3) the ids name a pair: the shipped models' all differ (a test checks). With version 4's
one 8-bit id of the pair (:func:`vqvae.codec.format.pair_id`) or version 2's 4 bits each,
several pairs may share the ids (version 2: the shipped mnist and cifar10 VQ-VAEs do), so
there the file is decoded with every candidate its ids name, and the one whose checksum
matches made it; that also tells whether it has the VQ-VAE of the pair that was tried."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..checkpoint import PRETRAINED_DIR, WEIGHTS_NAME
from ..grid_prior import GRID_PRIOR_WEIGHTS, GridPrior, stage_fingerprint
from ..model import load_pretrained
from ..prior import PRIOR_WEIGHTS, codebook_fingerprint, load_prior
from . import photo
from .format import ID_BITS, prior_fingerprint, read_header, short_id


@dataclass(eq=False)
class Candidate:
    """A (VQ-VAE, prior) pair a file may come from: ``grid`` for a :class:`GridPrior`
    (format 3), else a :class:`CodePrior` (formats 1, 2, 4). ``load`` gives (model, prior),
    called once, when a file must be decoded to tell (versions 2 and 4)."""

    name: str
    vqvae_fp: str
    prior_fp: str
    grid: bool
    load: Callable[[], tuple]
    _pair: tuple | None = None

    def pair(self) -> tuple:
        """(model, prior), loaded on first use."""
        if self._pair is None:
            self._pair = self.load()
        return self._pair

    def ids(self, bits: int) -> tuple[int, int]:
        """The (VQ-VAE, prior) ids a file of ``bits``-bit ids for each (versions 1 to 3) has
        for this pair."""
        return _ids(self.vqvae_fp, self.prior_fp, bits)

    def decodes(self, data: bytes) -> bool:
        """Whether this pair decodes ``data`` with its checksum matching."""
        model, prior = self.pair()
        try:
            if self.grid:
                photo.decompress_codes_v3(model, prior, data)
            else:
                from .api import decompress_codes  # (api raises what names this module)

                decompress_codes(prior, data, model=model)
        except ValueError:
            return False
        return True


def candidate(name: str, model, prior) -> Candidate:
    """A loaded pair as a candidate: ``prior`` a CodePrior or a GridPrior of ``model``."""
    if isinstance(prior, GridPrior):
        fps = stage_fingerprint(model), photo.prior_fingerprint(prior)
    else:
        fps = codebook_fingerprint(model), prior_fingerprint(prior)
    grid = isinstance(prior, GridPrior)
    return Candidate(name, *fps, grid, lambda: (model, prior), (model, prior))


def shipped_folders(prior_file: str = PRIOR_WEIGHTS) -> list[Path]:
    """Every shipped model folder that has a prior (``prior_file``): ``pretrained/`` of the
    package, then ``./pretrained``."""
    seen, out = set(), []
    for root in (PRETRAINED_DIR, Path.cwd() / "pretrained"):
        for d in sorted(root.glob("*")) if root.is_dir() else []:
            if (d / WEIGHTS_NAME).is_file() and (d / prior_file).is_file():
                if d.resolve() not in seen:
                    seen.add(d.resolve())
                    out.append(d)
    return out


def _load(folder: Path, grid: bool) -> tuple:
    model = load_pretrained(folder)
    return model, GridPrior.from_pretrained(folder) if grid else load_prior(folder, model=model)


_fingerprints: dict = {}  # (folder, grid) -> (files' sizes and times, vqvae_fp, prior_fp)


def shipped(grid: bool = False) -> list[Candidate]:
    """The shipped pairs (:func:`shipped_folders`) as candidates: their fingerprints are
    computed once per process (each pair loaded once, about 0.2 s) and again only when a
    folder's weight files change. A folder that does not load is left out."""
    weights = GRID_PRIOR_WEIGHTS if grid else PRIOR_WEIGHTS
    out = []
    for d in shipped_folders(weights):
        try:
            stamp = tuple((s.st_size, s.st_mtime_ns)
                          for s in ((d / f).stat() for f in (WEIGHTS_NAME, weights)))  # fmt: skip
            hit = _fingerprints.get((d.resolve(), grid))
            if hit is not None and hit[0] == stamp:
                out.append(Candidate(d.name, hit[1], hit[2], grid, partial(_load, d, grid)))
                continue
            c = candidate(d.name, *_load(d, grid))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        _fingerprints[(d.resolve(), grid)] = (stamp, c.vqvae_fp, c.prior_fp)
        out.append(c)
    return out


def _ids(vqvae_fp: str, prior_fp: str, bits: int) -> tuple[int, int]:
    return short_id(vqvae_fp, bits), short_id(prior_fp, bits)


def _header_ids(data) -> tuple[bool, tuple[int, ...], Callable[[str, str], tuple], int]:
    """(a photo's file, the ids its header gives, the ids a file of its version has for
    (vqvae_fp, prior_fp), bits per id) of a file; ValueError for one with no readable
    header."""
    if photo.is_photo_file(data):
        hd = photo.read_photo_header(data)
        return True, (hd.vqvae_id, hd.prior_id), partial(_ids, bits=ID_BITS), ID_BITS
    info = read_header(data)
    return False, info.ids, info.ids_for, info.id_bits


@dataclass(frozen=True)
class Identity:
    """What :func:`identify` found: ``owner``, the candidate that made the file; else
    ``vqvae_of``, one whose VQ-VAE made it (with a prior that is none of the candidates');
    ``refused``, the candidates the ids named whose checksum did not match (tried before
    the owner, if there is one); ``names``, every candidate of the file's kind;
    ``same_vqvae``, where the owner was found by decoding the file and a pair was tried
    before, whether the owner has that pair's VQ-VAE (None where the ids told)."""

    owner: Candidate | None = None
    vqvae_of: Candidate | None = None
    refused: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    grid: bool = False
    same_vqvae: bool | None = None

    def note(self, action: str, otherwise: str = "") -> str:
        """What the file is, in words: where a candidate made it, ending in ``action``
        (with ``{name}``, the model to use: "choose {name}", "pass --model {name}"); else
        ending in ``otherwise`` (default: decode it with the pair it was compressed with)."""
        prior = "grid prior" if self.grid else "prior"
        if self.owner is not None:
            name, found = self.owner.name, ""
            if self.same_vqvae is not None:  # narrow ids could not tell: the decoding did
                what = (f"another {prior} for the same VQ-VAE" if self.same_vqvae
                        else "another VQ-VAE")  # fmt: skip
                found = f" (decoding it shows: made with {what})"
            return (f"it was coded with {name}'s VQ-VAE and {prior}{found}: "
                    f"{action.format(name=name)}")  # fmt: skip
        otherwise = otherwise or f"decode it with the VQ-VAE and {prior} it was compressed with"
        if self.vqvae_of is not None:
            name = self.vqvae_of.name
            return f"it was coded with {name}'s VQ-VAE, another {prior} than {name}'s: {otherwise}"
        among = f" ({', '.join(self.names)})" if self.names else ""
        return f"it is from another model than these{among}: {otherwise}"


def identify(data, candidates: Iterable[Candidate], exclude=None) -> Identity:
    """Which of ``candidates`` made the ``.vqz`` file ``data`` (bytes), leaving out the pair
    whose fingerprints are ``exclude`` ((vqvae_fp, prior_fp): the one just tried). By the
    ids alone where they are wide (12 bits or more for each of the two: versions 1 and 3)
    and name one candidate; else each candidate the ids name decodes the file, and the first
    whose checksum matches is the owner. A file with no readable header has no owner."""
    try:
        grid, ids, ids_of, bits = _header_ids(data)
    except ValueError:
        return Identity()
    pool = [c for c in candidates
            if c.grid == grid and (c.vqvae_fp, c.prior_fp) != exclude]  # fmt: skip
    names = tuple(c.name for c in pool)
    named = [c for c in pool if ids_of(c.vqvae_fp, c.prior_fp) == ids]
    wide = bits >= ID_BITS  # (version 4's 8-bit pair id is not)
    if len(named) == 1 and wide:
        return Identity(owner=named[0], names=names, grid=grid)
    # whether the header already says that the VQ-VAE differs from the one tried
    told = exclude is not None and len(ids) == 2 and ids_of(*exclude)[0] != ids[0]
    refused = []
    for c in named:
        if c.decodes(data):
            same = None if exclude is None or told else c.vqvae_fp == exclude[0]
            return Identity(c, None, tuple(refused), names, grid, same)
        refused.append(c.name)
    # narrow ids say nothing about the VQ-VAE alone: 1 model in 16 shares it by chance
    same_vqvae = [c for c in pool if wide and ids_of(c.vqvae_fp, c.prior_fp)[0] == ids[0]]
    return Identity(None, next(iter(same_vqvae), None), tuple(refused), names, grid)


def shipped_note(data, exclude=None, action: str = "decode it with the shipped model {name!r}"):
    """:meth:`Identity.note` of ``data`` among the shipped pairs of its kind."""
    grid = photo.is_photo_file(data)
    return identify(data, shipped(grid), exclude).note(action)
