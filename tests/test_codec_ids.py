"""Which model made a .vqz file: the shipped pairs' ids all differ, version 4 files (an 8-bit
id of the pair) and version 2 files (4-bit ids) whose ids collide are told apart by their
checksum, and a file decoded with the wrong model names the one that made it."""

import pytest
import torch

import vqvae
from codec_helpers import as_version_2, codec_pair, make_prior, version_1_head
from vqvae.codec import (
    ID_BITS,
    ForeignFileError,
    compress,
    compress_codes,
    decompress,
    decompress_codes,
    identify,
    owners,
    read_header,
)
from vqvae.codec import format as vqz
from vqvae.prior import codebook_fingerprint


@pytest.fixture
def tiny_pair(tiny_config):
    return codec_pair(tiny_config)


def colliding_priors(model, n=2, bits=4):
    """``n`` priors of ``model`` whose ``bits``-bit ids are equal (1 in 16 each at 4 bits)."""
    found = []
    for seed in range(300):
        p = make_prior(model=model, seed=seed, std=0.3)
        pid = vqz.short_id(vqz.prior_fingerprint(p), bits)
        if not found or pid == vqz.short_id(vqz.prior_fingerprint(found[0]), bits):
            found.append(p)
        if len(found) == n:
            return found
    raise AssertionError("no colliding priors in 300 seeds")


@pytest.mark.parametrize("grid", [False, True])
def test_the_shipped_pairs_ids_all_differ(grid):
    """Every shipped (VQ-VAE, prior) pair has its own id (format 4: 8 bits for the pair), and
    every shipped set of codebooks and every grid prior its own (format 3: 12 bits each): a
    file decoded with another shipped model is refused by its header. A format 3 VQ-VAE id
    names the codebooks, which a model distilled from another shares with it (its codes
    mean the same vectors): their files differ by the grid prior's id."""
    pairs = owners.shipped(grid)
    names = {c.name for c in pairs}
    assert names >= ({"cifar10"} if grid else {"mnist", "fashion-mnist", "cifar10"})
    if grid:
        codebooks = {c.vqvae_fp for c in pairs}
        assert len({c.ids(ID_BITS)[0] for c in pairs}) == len(codebooks)
        ids = [[c.ids(ID_BITS)[1] for c in pairs]]  # the grid priors'
    else:
        ids = [[vqz.pair_id(c.vqvae_fp, c.prior_fp) for c in pairs]]
    for each in ids:
        assert len(set(each)) == len(pairs), ([c.name for c in pairs], ids)


def test_a_model_folder_without_a_prior_has_no_pair(tiny_pair, tmp_path, monkeypatch):
    model, prior = tiny_pair
    model.save_pretrained(tmp_path / "pretrained" / "codes-only")  # no prior, no grid prior
    model.save_pretrained(tmp_path / "pretrained" / "paired")
    prior.save_pretrained(tmp_path / "pretrained" / "paired")
    monkeypatch.chdir(tmp_path)
    names = [c.name for c in owners.shipped()]
    assert "paired" in names and "codes-only" not in names
    assert "codes-only" not in [c.name for c in owners.shipped(grid=True)]


def test_version_4_header_holds_the_pairs_8_bit_id(tiny_pair):
    model, prior = tiny_pair
    (f,) = compress_codes(prior, prior.sample(1), model=model)
    info = read_header(f)
    assert (f[0], info.version, info.id_bits, info.header_bytes) == (0xA4, 4, 8, 4)
    c = owners.candidate("tiny", model, prior)
    assert info.ids == (f[1],) == (vqz.pair_id(c.vqvae_fp, c.prior_fp),)
    assert (info.vqvae_id, info.prior_id) == (None, None)  # the pair's only


def test_version_4_files_whose_pair_ids_collide_are_told_apart_by_the_checksum(
    tiny_pair, tiny_config, monkeypatch
):
    """A file whose pair id other pairs share is decoded with each pair of that id, and the
    one whose checksum matches made it; the message says what the decoding found: another
    prior for the same VQ-VAE, or another VQ-VAE."""
    model, prior = tiny_pair
    other = make_prior(model=model, seed=7, std=0.3)  # the same VQ-VAE, another prior
    torch.manual_seed(3)
    far_model = vqvae.VQVAE(tiny_config).eval()  # another VQ-VAE
    far_prior = make_prior(model=far_model, std=0.3)
    mine, theirs = owners.candidate("mine", model, prior), owners.candidate("other", model, other)
    far = owners.candidate("far", far_model, far_prior)
    monkeypatch.setattr(vqz, "pair_id", lambda vqvae_fp, prior_fp: 0x5A)  # every pair's id
    codes = prior.sample(1, labels=2, generator=torch.Generator().manual_seed(0))
    (f,) = compress_codes(prior, codes, 2, model=model)
    assert f[1] == 0x5A and torch.equal(decompress_codes(prior, f, model=model)[0], codes)
    who = identify(f, [theirs, far, mine])
    assert who.owner is mine and who.refused == ("other", "far") and who.same_vqvae is None
    assert identify(f, [theirs, far]).refused == ("other", "far")  # none made it
    for pair, found in ((theirs, "another prior for the same VQ-VAE"), (far, "another VQ-VAE")):
        with pytest.raises(ForeignFileError, match="corrupted or truncated") as e:
            decompress_codes(pair.pair()[1], f, model=pair.pair()[0])  # its checksum fails
        who = identify(f, [theirs, far, mine], exclude=e.value.tried)
        assert who.owner is mine and who.same_vqvae is (pair is theirs)
        assert who.note("choose {name}") == (
            f"it was coded with mine's VQ-VAE and prior (decoding it shows: made with {found}): "
            "choose mine"
        )


def test_version_2_files_still_decode_and_their_ids_are_told_apart_by_the_checksum(tiny_pair):
    model, _ = tiny_pair
    a, b = colliding_priors(model)
    codes = b.sample(1, labels=2, generator=torch.Generator().manual_seed(0))
    old = as_version_2(compress_codes(b, codes, 2, model=model)[0], b, codes[0], 2)
    info = read_header(old)
    assert (info.version, info.id_bits, info.header_bytes) == (2, 4, 4)
    got, labels = decompress_codes(b, old, model=model)
    assert torch.equal(got, codes) and labels.tolist() == [2]
    # a's ids are the same; only decoding tells, and the file then names b
    pair = [owners.candidate("a", model, a), owners.candidate("b", model, b)]
    assert pair[0].ids(4) == pair[1].ids(4) == (info.vqvae_id, info.prior_id)
    who = identify(old, pair)
    assert who.owner is pair[1] and who.refused == ("a",)
    with pytest.raises(ForeignFileError, match="corrupted or truncated") as e:
        decompress_codes(a, old, model=model)
    assert identify(old, pair, exclude=e.value.tried).owner is pair[1]
    # a file that both name and neither made: no owner, both refused
    c = colliding_priors(model, 3)[2]
    stray = as_version_2(compress_codes(c, codes, 2, model=model)[0], c, codes[0], 2)
    who = identify(stray, pair)
    assert who.owner is None and who.refused == ("a", "b")
    assert "another model than these (a, b)" in who.note("choose {name}")


def test_wide_ids_name_the_owner_without_decoding(tiny_pair, tiny_config):
    """Version 1's 16-bit ids (as version 3's 12-bit ones) name the VQ-VAE and the prior: the
    owner is found by the ids alone, and a file of another prior for a candidate's VQ-VAE is
    said to be one. Only the header is read: a version 1 head on a version 4 payload."""
    model, prior = tiny_pair
    torch.manual_seed(3)
    other_model = vqvae.VQVAE(tiny_config).eval()
    other = make_prior(model=other_model, std=0.3)
    (f,) = compress_codes(other, other.sample(1), model=other_model)

    def never(*_):
        raise AssertionError("decoded")

    def version_1(f, vqvae_fp, prior_fp):
        return version_1_head(vqvae_fp, prior_fp) + bytes(3) + f[read_header(f).header_bytes :]

    mine = owners.Candidate("mine", codebook_fingerprint(model), vqz.prior_fingerprint(prior),
                            False, never)  # fmt: skip
    theirs = owners.candidate("theirs", other_model, other)
    theirs.load = theirs._pair = None  # loading it would fail: it is never needed
    who = identify(version_1(f, theirs.vqvae_fp, theirs.prior_fp), [mine, theirs])
    assert who.owner is theirs
    assert who.note("choose {name}") == "it was coded with theirs's VQ-VAE and prior: choose theirs"
    # the same VQ-VAE with a prior none of the candidates has
    stranger = make_prior(model=other_model, seed=8, std=0.3)
    g = version_1(f, theirs.vqvae_fp, vqz.prior_fingerprint(stranger))
    who = identify(g, [mine, theirs])
    assert who.owner is None and who.vqvae_of is theirs
    assert "theirs's VQ-VAE, another prior than theirs's" in who.note("choose {name}")
    assert identify(b"not a file", [mine, theirs]).owner is None


def test_a_shipped_models_file_decoded_with_another_names_it():
    """A cifar10 file decoded with mnist: in format 4 the pair ids differ; in format 2 the
    VQ-VAE ids were equal (3 and 3) and only the prior's differed. Both name cifar10, and
    decoding it shows that the VQ-VAE differs."""
    mnist, cifar = vqvae.load_pretrained("mnist"), vqvae.load_pretrained("cifar10")
    mnist_prior = vqvae.load_prior("mnist", model=mnist)
    cifar_prior = vqvae.load_prior("cifar10", model=cifar)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (f,) = compress(cifar, cifar_prior, x)
    codes = cifar.encode(x)
    old = as_version_2(f, cifar_prior, codes[0], -1, codebook_fingerprint(cifar))
    for data, what in ((f, "another VQ-VAE or prior"), (old, "another prior")):
        with pytest.raises(ForeignFileError, match=what) as e:
            decompress(mnist, mnist_prior, data)
        assert "it was coded with cifar10's VQ-VAE and prior" in str(e.value)
        assert "(decoding it shows: made with another VQ-VAE)" in str(e.value)
        assert "decode it with the shipped model 'cifar10'" in str(e.value)
    assert torch.equal(decompress(cifar, cifar_prior, old)[0], cifar.decode(codes))


def test_a_file_of_no_shipped_model_says_so(tiny_pair, tiny_config):
    model, prior = tiny_pair
    (f,) = compress_codes(prior, prior.sample(1), model=model)
    with pytest.raises(ValueError, match="made with another VQ-VAE or prior") as e:
        decompress_codes(make_prior(model=model, seed=5, std=0.3), f, model=model)
    assert "it is from another model than these (" in str(e.value)
    assert "mnist" in str(e.value)  # the shipped models are listed
