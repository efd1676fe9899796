"""The .vqz codec: exact round trips, files about the size of the prior's NLL, clear errors
for truncated, corrupted, foreign and future files, and coding under torch.inference_mode()."""

import math
import re

import pytest
import torch

import vqvae
from codec_helpers import CLASSES, H, K, W, codec_pair, make_prior, version_1_head
from vqvae.codec import (
    FORMAT_VERSION,
    HEADER_BYTES,
    cheapest_labels,
    compress,
    compress_codes,
    decompress,
    decompress_codes,
    prior_fingerprint,
    read_header,
)
from vqvae.prior import CodePrior


@pytest.fixture
def prior():
    return make_prior()


@pytest.fixture
def tiny_pair(tiny_config):
    """A tiny VQ-VAE (28x28 -> 7x7 codes, K = 32) and a random prior tied to it."""
    return codec_pair(tiny_config)


def rand_codes(n=6, seed=0):
    return torch.randint(0, K, (n, H, W), generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, -1, 1, 0])  # -1: no class on that grid


# ----------------------------------------------------------------------------- round trips
def test_random_codes_and_labels_round_trip_exactly(prior):
    codes = rand_codes()
    files = compress_codes(prior, codes, LABELS)
    assert len(files) == 6 and all(isinstance(f, bytes) for f in files)
    got, labels = decompress_codes(prior, files)
    assert got.dtype == torch.long and torch.equal(got, codes)
    assert torch.equal(labels, LABELS)
    # one file alone, an int label for all, no labels, and an unconditional prior
    got, labels = decompress_codes(prior, files[3])
    assert torch.equal(got, codes[3:4]) and labels.tolist() == [-1]
    got, labels = decompress_codes(prior, compress_codes(prior, codes, 2))
    assert torch.equal(got, codes) and labels.tolist() == [2] * 6
    uncond = make_prior(num_classes=0)
    got, labels = decompress_codes(uncond, compress_codes(uncond, codes))
    assert torch.equal(got, codes) and labels.tolist() == [-1] * 6


def test_the_class_is_part_of_the_code(prior):
    # the same grid coded under another class is another file, and costs other bits
    codes = rand_codes(1)
    a, b = compress_codes(prior, codes, 0)[0], compress_codes(prior, codes, 1)[0]
    assert a != b and read_header(a).label is None  # version 2: in the payload
    assert decompress_codes(prior, [a, b])[1].tolist() == [0, 1]


def test_auto_labels_pick_the_cheapest_class_and_the_smallest_file(prior):
    codes = prior.sample(8, labels=torch.arange(8) % 3, generator=torch.Generator().manual_seed(3))
    choices = torch.arange(-1, CLASSES)
    bits = torch.stack([prior.nll_bits(codes, int(c)) for c in choices], dim=1)
    picked = cheapest_labels(prior, codes)
    assert picked == choices[bits.argmin(dim=1)].tolist()
    auto = compress_codes(prior, codes, "auto")
    got, labels = decompress_codes(prior, auto)
    assert torch.equal(got, codes) and labels.tolist() == picked
    # every class costs the same in the file, so the auto file is never the larger one
    for c in choices.tolist():
        fixed = compress_codes(prior, codes, c)
        assert sum(map(len, auto)) <= sum(map(len, fixed)) + len(codes)  # + a byte's rounding
    # an unconditional prior has nothing to pick, and codes no class at all
    uncond = make_prior(num_classes=0)
    assert cheapest_labels(uncond, codes) == [-1] * 8
    assert compress_codes(uncond, codes, "auto") == compress_codes(uncond, codes)


def test_real_images_round_trip_to_the_models_reconstruction(tiny_pair, mnist_small):
    model, prior = tiny_pair
    x, labels = mnist_small.test[:4], mnist_small.test_labels[:4]
    prior = make_prior(num_classes=10, model=model, std=0.3)
    files = compress(model, prior, x, labels)
    images, got = decompress(model, prior, files)
    assert torch.equal(got, labels)
    assert images.shape == x.shape and images.dtype == torch.float32
    assert torch.equal(images, model.decode(model.encode(x)))
    # the same as the codes' own round trip
    codes, _ = decompress_codes(prior, files, model=model)
    assert torch.equal(codes, model.encode(x))


def test_a_prior_in_training_mode_or_another_dtype_codes_the_same(tiny_pair):
    model, _ = tiny_pair
    prior = make_prior(model=model, std=0.3, dropout=0.3)  # dropout would randomise training
    codes = prior.sample(3, labels=1, generator=torch.Generator().manual_seed(0))
    files = compress_codes(prior, codes, 1, model=model)
    prior.train()
    assert compress_codes(prior, codes, 1, model=model) == files
    assert prior.training  # the caller's prior is left as it was
    wide = make_prior(model=model, std=0.3, dropout=0.3).to(torch.float64)
    assert compress_codes(wide, codes, 1, model=model) == files
    assert torch.equal(decompress_codes(prior, files, model=model)[0], codes)


def test_threads_do_not_change_the_file_and_are_restored(prior):
    codes = rand_codes()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        files = compress_codes(prior, codes, LABELS)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert compress_codes(prior, codes, LABELS) == files
        assert torch.equal(decompress_codes(prior, files)[0], codes)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- size
def test_files_cost_the_priors_nll_within_one_percent_plus_the_header(tiny_pair):
    model, _ = tiny_pair
    prior = make_prior(model=model, std=0.6)  # peaked: far fewer bits than uniform
    sampled = prior.sample(12, labels=1, generator=torch.Generator().manual_seed(0))
    uniform = torch.randint(0, 32, (6, 7, 7), generator=torch.Generator().manual_seed(0))
    for codes in (sampled, uniform):
        # the class costs log2(classes + 1) bits: it is coded with equal probabilities
        nll = prior.nll_bits(codes, 1) + math.log2(CLASSES + 1)
        files = compress_codes(prior, codes, 1, model=model)
        for f, bits in zip(files, nll.tolist(), strict=True):
            info = read_header(f)
            assert info.total_bytes == len(f) and info.header_bytes == HEADER_BYTES == 4
            # a file is whole bytes: the payload may round the bits up to the next byte
            assert info.payload_bytes <= math.ceil(1.01 * bits / 8) + 1, (info, bits)
        payload = sum(read_header(f).payload_bytes for f in files)
        assert 8 * payload <= 1.01 * float(nll.sum()) + 8 * len(files)
    # codes the prior finds likely cost far below the plain h*w*log2 K bits
    payload = sum(read_header(f).payload_bytes for f in compress_codes(prior, sampled, 1))
    assert 8 * payload < 0.8 * len(sampled) * prior.config.uniform_bits


# ----------------------------------------------------------------------------- bad files
def test_truncated_files_are_refused(prior):
    codes = rand_codes(3)
    for f, c in zip(compress_codes(prior, codes, LABELS[:3]), codes, strict=True):
        for n in range(len(f)):
            with pytest.raises(ValueError, match="truncated|not a .vqz"):
                decompress_codes(prior, f[:n])
        assert torch.equal(decompress_codes(prior, f)[0][0], c)


def test_a_flipped_bit_is_refused_or_changes_nothing(prior):
    """Any single bit flip gives a ValueError or (a flip past the last byte that matters)
    the very same codes: never a wrong image."""
    codes = rand_codes(1)
    refused = same = 0
    for f, c in zip(compress_codes(prior, codes, 1), codes, strict=True):
        for i in range(8 * len(f)):
            bad = bytearray(f)
            bad[i // 8] ^= 1 << (i % 8)
            try:
                got = decompress_codes(prior, bytes(bad))[0][0]
            except ValueError as e:
                assert any(w in str(e) for w in ("corrupted", "another", "version", ".vqz"))
                refused += 1
                continue
            assert torch.equal(got, c)
            same += 1
    assert refused > 0.9 * (refused + same)


def test_payload_corruption_is_caught_by_the_checksum(prior):
    f = compress_codes(prior, rand_codes(1), 1)[0]
    bad = bytearray(f)
    bad[read_header(f).header_bytes] ^= 0x80  # the first payload bit: the first code changes
    with pytest.raises(ValueError, match="corrupted or truncated .vqz file.*checksum"):
        decompress_codes(prior, bytes(bad))


def test_files_for_another_model_or_prior_are_refused(tiny_config, tiny_pair):
    model, prior = tiny_pair
    codes = prior.sample(2, generator=torch.Generator().manual_seed(0))
    files = compress_codes(prior, codes, model=model)
    other_prior = make_prior(model=model, seed=7, std=0.3)  # same VQ-VAE, other weights
    # (one id names the pair: the header cannot tell which of the two differs)
    with pytest.raises(ValueError, match=r"another VQ-VAE or prior \(pair id [0-9a-f]{2}\)"):
        decompress(model, other_prior, files)
    torch.manual_seed(5)
    other_model = vqvae.VQVAE(tiny_config).eval()  # another codebook
    with pytest.raises(ValueError, match="made with another VQ-VAE"):
        decompress(other_model, make_prior(model=other_model, std=0.3), files)
    with pytest.raises(ValueError, match="belongs to 'tiny'"):
        decompress(other_model, prior, files)  # the prior itself refuses the model
    # a prior for another grid: the file names other fingerprints
    with pytest.raises(ValueError, match="another"):
        decompress_codes(make_prior(), files)
    # a prior that names no VQ-VAE codes only with the model, and the file names the model
    untied = make_prior(model=model, std=0.3)
    untied.config.vqvae_fingerprint = ""
    with pytest.raises(ValueError, match=r"names no VQ-VAE .*: pass model="):
        compress_codes(untied, codes)
    files = compress_codes(untied, codes, model=model)
    assert torch.equal(decompress_codes(untied, files, model=model)[0], codes)
    with pytest.raises(ValueError, match="made with another VQ-VAE"):
        decompress_codes(untied, files, model=other_model)


def test_unknown_versions_and_non_vqz_data_are_refused(prior):
    f = compress_codes(prior, rand_codes(1))[0]
    assert read_header(f).version == FORMAT_VERSION == 4 and f[0] == 0xA4
    photo = bytes([0xA3]) + f[1:]  # version 3: an image of any size
    with pytest.raises(ValueError, match="version 3 .*decompress_image"):
        decompress_codes(prior, photo)
    with pytest.raises(ValueError, match="version 6 is newer .* update vqvae"):
        decompress_codes(prior, bytes([0xA6]) + f[1:])
    for old in (0, 1):  # version 1 files begin b"VQZ", not 0xA1
        with pytest.raises(ValueError, match=f"unknown .vqz format version {old}"):
            decompress_codes(prior, bytes([0xA0 | old]) + f[1:])
    with pytest.raises(ValueError, match="unknown .vqz format version 7"):
        decompress_codes(prior, b"VQZ\x07" + f[1:])
    with pytest.raises(ValueError, match="not a .vqz file"):
        decompress_codes(prior, b"\x89PNG\r\n\x1a\n" + f)
    with pytest.raises(ValueError, match="not a .vqz file"):
        decompress_codes(prior, b"")
    with pytest.raises(TypeError, match="bytes"):
        decompress_codes(prior, "file.vqz")
    with pytest.raises(TypeError, match="bytes"):
        decompress_codes(prior, [f, 3])


def test_float64_coding_absorbs_tiny_float_differences(prior, monkeypatch):
    """Another CPU or BLAS may round the prior's arithmetic differently. Coding in float64
    keeps such differences (about 1e-16 relative; 1e-12 here) far below the 2^-20 steps of
    the coded counts, so a file still decodes; in float32 (1e-6) the counts would change."""
    from vqvae.codec import coder

    codes = prior.sample(4, labels=1, generator=torch.Generator().manual_seed(2))
    files = compress_codes(prior, codes, 1)
    real, g = coder.coding_prior, torch.Generator().manual_seed(0)

    def nudged(scale):
        def coding_prior(p, version=FORMAT_VERSION):
            cp = real(p, version)
            twin = CodePrior(cp.config).to(torch.float64).eval()
            with torch.no_grad():
                for a, b in zip(twin.parameters(), cp.parameters(), strict=True):
                    noise = torch.randn(b.shape, dtype=torch.float64, generator=g)
                    a.copy_(b * (1 + scale * noise))
            return twin

        return coding_prior

    monkeypatch.setattr(coder, "coding_prior", nudged(1e-12))
    got, labels = decompress_codes(prior, files)
    assert torch.equal(got, codes) and labels.tolist() == [1] * 4
    monkeypatch.setattr(coder, "coding_prior", nudged(1e-6))
    with pytest.raises(ValueError, match="corrupted|checksum"):
        decompress_codes(prior, files)


def test_version_1_files_still_decode(monkeypatch):
    """The first format (b"VQZ", a 12-byte header with the class in it, the prior run in
    float32) is read, no longer written. A hand-made one: for an unconditional prior its
    payload is version 2's range-coded codes, with the prior run in float32."""
    from vqvae.codec import coder
    from vqvae.codec import format as vqz

    uncond, codes = make_prior(num_classes=0), rand_codes(2)
    vqvae_fp, prior_fp = uncond.config.vqvae_fingerprint, prior_fingerprint(uncond)
    real = coder.coding_prior
    with monkeypatch.context() as m:
        m.setattr(coder, "coding_prior", lambda p, version=2: real(p, 1))
        payloads = compress_codes(uncond, codes)
    assert payloads != compress_codes(uncond, codes)  # float32 and float64 counts differ
    old = []
    for f, c in zip(payloads, codes, strict=True):
        head = version_1_head(vqvae_fp, prior_fp)  # class varint 0: none
        check = vqz.checksum(head, vqvae_fp, prior_fp, -1, c.flatten().numpy(), version=1)
        old.append(head + check + f[read_header(f).header_bytes :])
    info = read_header(old[0])
    assert (info.version, info.header_bytes, info.label, info.id_bits) == (1, 12, -1, 16)
    got, labels = decompress_codes(uncond, old)
    assert torch.equal(got, codes) and labels.tolist() == [-1, -1]
    bad = bytearray(old[0])
    bad[-1] ^= 0x01
    with pytest.raises(ValueError, match="corrupted|checksum"):
        decompress_codes(uncond, bytes(bad))
    with pytest.raises(ValueError, match="another prior"):
        decompress_codes(make_prior(num_classes=0, seed=9), old[0])


def test_bad_codes_and_labels_give_clear_errors(prior):
    codes = rand_codes(2)
    bad = [
        (lambda: compress_codes(prior, codes, 3), ValueError, r"labels must be in \[0, 2\]"),
        (lambda: compress_codes(prior, codes, [0, -2]), ValueError, "labels must be in"),
        (lambda: compress_codes(prior, codes, [0, 1, 2]), ValueError, r"shape \(2,\)"),
        (lambda: compress_codes(prior, codes, 0.5), TypeError, "labels must be"),
        (lambda: compress_codes(make_prior(0), codes, 1), ValueError, "unconditional"),
        (lambda: compress_codes(prior, codes + K), ValueError, r"codes must be in \[0, 15\]"),
        (lambda: compress_codes(prior, codes[:, :2]), ValueError, r"shape \(B, 3, 4\)"),
        (lambda: compress_codes(prior, codes.float()), TypeError, "integer tensor"),
        (lambda: compress_codes(object(), codes), TypeError, "CodePrior"),
    ]
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            call()


def test_prior_fingerprint_follows_the_weights(prior):
    fp = prior_fingerprint(prior)
    assert fp == prior_fingerprint(make_prior()) and len(fp) == 16
    with torch.no_grad():
        prior.head.bias[0] += 1.0  # in place: the cached fingerprint must not be reused
    assert prior_fingerprint(prior) != fp


@pytest.mark.parametrize("inference", [False, True])
def test_weights_changed_in_place_are_noticed(inference):
    """The fingerprint and the coding copy follow a prior's weights changed in place: by
    the tensors' version counters, or for inference tensors (made under
    torch.inference_mode()), which have none, by their bytes."""
    codes = rand_codes(2)
    with torch.inference_mode(inference), torch.no_grad():
        prior = make_prior()
        assert prior.head.bias.is_inference() == inference
        fp, files = prior_fingerprint(prior), compress_codes(prior, codes, 1)
        prior.head.bias[0] += 1.0
        twin = make_prior()  # a fresh prior with the changed weights
        twin.head.bias[0] += 1.0
        assert prior_fingerprint(prior) == prior_fingerprint(twin) != fp
        changed = compress_codes(prior, codes, 1)
        assert changed == compress_codes(twin, codes, 1)
        assert [f[6:] for f in changed] != [f[6:] for f in files]  # payloads, not just ids
        assert torch.equal(decompress_codes(prior, changed)[0], codes)


def test_a_model_and_prior_loaded_under_inference_mode_round_trip(tiny_pair, mnist_small, tmp_path):
    model, prior = tiny_pair
    model.save_pretrained(tmp_path)
    prior.save_pretrained(tmp_path)
    x = mnist_small.test[:3]
    expected = compress(model, prior, x, "auto")
    with torch.inference_mode():
        loaded = vqvae.load_pretrained(tmp_path)
        loaded_prior = vqvae.load_prior(tmp_path, model=loaded)
        assert loaded_prior.head.weight.is_inference() and loaded.codebook.is_inference()
        files = compress(loaded, loaded_prior, x, "auto")
        images, labels = decompress(loaded, loaded_prior, files)
    assert files == expected
    assert torch.equal(images, model.decode(model.encode(x)))
    assert labels.tolist() == cheapest_labels(prior, model.encode(x))


def test_random_payloads_are_refused_never_crash_the_decoder():
    """A payload the prior cannot have produced makes constriction's decoder fail an
    assertion; that must reach the caller as the codec's ValueError (or, when the random
    bytes happen to decode to codes that pass the checksum, those are the file's codes)."""
    prior = make_prior(std=3.0)  # sharply peaked distributions, as a trained prior's
    codes = prior.sample(1, 1, generator=torch.Generator().manual_seed(0))
    (f,) = compress_codes(prior, codes, 1)
    head = f[: read_header(f).header_bytes]
    g = torch.Generator().manual_seed(0)
    refused = 0
    for n in (1, 2, 3, 5, 8, 13, 21):
        for _ in range(20):
            payload = bytes(torch.randint(0, 256, (n,), generator=g).tolist())
            try:
                got, _ = decompress_codes(prior, head + payload)
            except ValueError as e:
                assert re.search("corrupted|truncated", str(e)), str(e)
                refused += 1
            else:
                assert torch.equal(got, codes)
    assert refused > 0


def test_real_mnist_files_round_trip_with_the_shipped_prior(mnist_small):
    """Test image 37 of the small MNIST sample once made the encoder's shortest-payload search
    crash inside constriction (a candidate it tried could not be decoded)."""
    model = vqvae.load_pretrained("mnist")
    prior = vqvae.load_prior("mnist", model=model)
    x, y = mnist_small.test[35:40], mnist_small.test_labels[35:40]
    files = vqvae.compress(model, prior, x, y)
    decoded, labels = vqvae.decompress(model, prior, files)
    assert torch.equal(decoded, model.decode(model.encode(x))) and torch.equal(labels, y)
    nll = prior.nll_bits(model.encode(x), y) + math.log2(11)  # + the class
    for f, bits in zip(files, nll, strict=True):
        assert 8 * read_header(f).payload_bytes <= 1.01 * float(bits) + 8
    # "auto" codes the cheapest class: never a larger file than the true class's
    auto = vqvae.compress(model, prior, x, "auto")
    assert sum(map(len, auto)) <= sum(map(len, files)) + len(files)
    assert torch.equal(vqvae.decompress(model, prior, auto)[0], decoded)


# ----------------------------------------------------------------------------- one pass
def test_one_pass_files_round_trip_and_the_counts_match_on_a_thousand_grids(prior):
    """Version 5: the encoder's counts come from one full-length forward; the decoder's from
    a forward per cell over the grid read so far (later cells 0). Every row equals the
    encoder's, to the bit, on 1000 random grids and classes."""
    from vqvae.codec import coder

    cp = coder.coding_prior(prior)
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(0, K, (1000, H * W), generator=g).numpy()
    labels = torch.randint(-1, CLASSES, (1000,), generator=g).tolist()
    with coder.one_thread():
        for grid, label in zip(codes, labels, strict=True):
            full = coder.full_counts(cp, grid, label)
            for t in range(H * W):
                partial = grid.copy()
                partial[t:] = 0  # what the decoder has not read yet
                assert (coder.full_counts(cp, partial, label)[t] == full[t]).all()
    grids = torch.from_numpy(codes[:40]).view(40, H, W)
    files = compress_codes(prior, grids, torch.tensor(labels[:40]), one_pass=True)
    assert all(read_header(f).version == 5 and f[0] == 0xA5 for f in files)
    got, back = decompress_codes(prior, files)
    assert torch.equal(got, grids) and back.tolist() == labels[:40]
    # the same codes, counted from the stepped prior (version 4): within 2 % of the size
    stepped = compress_codes(prior, grids, torch.tensor(labels[:40]))
    assert abs(sum(map(len, files)) - sum(map(len, stepped))) <= 0.02 * sum(map(len, stepped))


def test_one_pass_files_are_checked_as_version_4_ones(prior, tiny_pair):
    f = compress_codes(prior, rand_codes(1), 1, one_pass=True)[0]
    with pytest.raises(ValueError, match="truncated"):
        decompress_codes(prior, f[:3])
    bad = f[:2] + bytes([f[2] ^ 0xFF]) + f[3:]  # the checksum
    with pytest.raises(ValueError, match="checksum"):
        decompress_codes(prior, bad)
    model, other = tiny_pair
    with pytest.raises(ValueError, match="another VQ-VAE or prior"):
        decompress_codes(other, f, model=model)
    # a version 5 mark on a stepped file's payload: decoded the other way, refused
    stepped = compress_codes(prior, rand_codes(1, seed=3), 1)[0]
    with pytest.raises(ValueError):
        decompress_codes(prior, bytes([0xA5]) + stepped[1:])


@pytest.mark.slow
def test_one_pass_mnist_files_round_trip_with_the_shipped_prior(mnist_small):
    model = vqvae.load_pretrained("mnist")
    prior = vqvae.load_prior("mnist", model=model)
    x, y = mnist_small.test[:8], mnist_small.test_labels[:8]
    files = vqvae.compress(model, prior, x, y, one_pass=True)
    decoded, labels = vqvae.decompress(model, prior, files)
    assert torch.equal(decoded, model.decode(model.encode(x))) and torch.equal(labels, y)
    stepped = vqvae.compress(model, prior, x, y)
    assert abs(sum(map(len, files)) - sum(map(len, stepped))) <= 8
