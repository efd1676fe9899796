"""The code prior: causality, bits that agree with a direct computation, the key/value cache,
reproducible sampling with top-k, temperature and guidance, completion that keeps the kept
cells, files without pickle, and clear errors for a prior paired with another model."""

import json
import math
import resource
import time

import pytest
import torch

import vqvae
from prior_helpers import peaked_prior
from vqvae.prior import (
    MAX_SAMPLES,
    PRIOR_CONFIG,
    PRIOR_WEIGHTS,
    CodePrior,
    PriorConfig,
    codebook_fingerprint,
    load_prior,
)

K, H, W, CLASSES = 16, 3, 4, 3  # a non-square grid, so rows and columns cannot be mixed up


def make_prior(num_classes=CLASSES, model=None) -> CodePrior:
    kw = dict(num_classes=num_classes, d_model=32, n_layers=2, n_heads=2)
    config = PriorConfig.for_model(model, **kw) if model else PriorConfig(K, H, W, **kw)
    return peaked_prior(config, seed=1, std=0.5)


@pytest.fixture
def prior():
    return make_prior()


def rand_codes(n=5, seed=0):
    return torch.randint(0, K, (n, H, W), generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, -1, 1])  # -1: no class on that row


# ----------------------------------------------------------------------------- bits
def test_changing_a_later_code_never_changes_earlier_bits(prior):
    codes = rand_codes()
    before = prior.code_bits(codes, LABELS).flatten(1)
    for t in (0, 5, H * W - 1):
        changed = codes.clone().flatten(1)
        changed[:, t] = (changed[:, t] + 1) % K
        after = prior.code_bits(changed.view(-1, H, W), LABELS).flatten(1)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-5)
        assert (after[:, t] - before[:, t]).abs().max() > 1e-2  # the changed code itself
        if t + 1 < H * W:  # and the cells after it see the change
            assert (after[:, t + 1 :] - before[:, t + 1 :]).abs().max() > 1e-2


def test_nll_is_the_sum_of_code_bits_and_a_direct_computation(prior):
    codes = rand_codes()
    bits = prior.code_bits(codes, LABELS)
    assert bits.shape == (5, H, W) and bits.dtype == torch.float32 and (bits > 0).all()
    nll = prior.nll_bits(codes, LABELS)
    assert nll.shape == (5,)
    torch.testing.assert_close(nll, bits.sum((1, 2)))
    with torch.no_grad():
        logp = torch.log_softmax(prior(codes, LABELS), dim=-1)  # (B, h*w, K)
    direct = -logp.gather(-1, codes.flatten(1)[..., None])[..., 0].sum(1) / math.log(2)
    torch.testing.assert_close(nll, direct)
    # a grid the prior finds likely costs fewer bits than uniform h*w*log2 K
    sampled = prior.sample(64, generator=torch.Generator().manual_seed(0))
    assert prior.nll_bits(sampled).mean() < prior.config.uniform_bits


def test_labels_change_the_bits_and_none_is_the_null_class(prior):
    codes = rand_codes()
    assert not torch.allclose(prior.nll_bits(codes, 0), prior.nll_bits(codes, 1))
    torch.testing.assert_close(prior.nll_bits(codes), prior.nll_bits(codes, [-1] * 5))


# ----------------------------------------------------------------------------- step by step
def stepped_bits(prior, codes, labels, **options):
    state = prior.start(labels, len(codes), **options)
    flat, out = codes.flatten(1), []
    for t in range(H * W):
        assert state.pos == t and state.probs.shape == (len(codes), K)
        out.append(-torch.log2(state.probs.gather(1, flat[:, t : t + 1])[:, 0]))
        probs = prior.step(state, flat[:, t])
    assert probs is None and state.probs is None
    assert torch.equal(state.codes, flat)
    return torch.stack(out, 1).view(codes.shape)


def test_cache_gives_the_distributions_of_full_passes(prior):
    codes = rand_codes()
    for labels in (LABELS, None):
        full = prior.code_bits(codes, labels)
        torch.testing.assert_close(stepped_bits(prior, codes, labels), full, rtol=0, atol=1e-4)


def test_stepping_is_deterministic_and_refuses_a_finished_pass(prior):
    codes = rand_codes()
    a, b = stepped_bits(prior, codes, LABELS), stepped_bits(prior, codes, LABELS)
    assert torch.equal(a, b)
    state = prior.start(None, 1)
    for _ in range(H * W):
        prior.step(state, 3)
    with pytest.raises(ValueError, match="complete"):
        prior.step(state, 3)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]"):
        prior.step(prior.start(None, 1), K)


def test_guidance_one_is_the_conditional_distribution(prior):
    codes = rand_codes()
    with torch.no_grad():
        cond = torch.softmax(prior(codes, LABELS)[:, 0], -1)
        null = prior(codes, None)[:, 0]
    torch.testing.assert_close(prior.start(LABELS, guidance=1.0).probs, cond)
    # g = 0: the unconditional distribution; g = 2: null + 2 (cond - null)
    torch.testing.assert_close(prior.start(LABELS, guidance=0.0).probs, torch.softmax(null, -1))
    with torch.no_grad():
        c = prior(codes, LABELS)[:, 0]
    mixed = torch.softmax(null + 2.0 * (c - null), -1)
    torch.testing.assert_close(prior.start(LABELS, guidance=2.0).probs, mixed)
    # temperature divides the logits
    torch.testing.assert_close(
        prior.start(LABELS, temperature=0.5).probs, torch.softmax(c / 0.5, -1)
    )


# ----------------------------------------------------------------------------- sampling
def test_fixed_generator_gives_the_same_samples(prior):
    a = prior.sample(8, labels=1, generator=torch.Generator().manual_seed(3))
    b = prior.sample(8, labels=1, generator=torch.Generator().manual_seed(3))
    c = prior.sample(8, labels=1, generator=torch.Generator().manual_seed(4))
    assert a.shape == (8, H, W) and a.dtype == torch.long
    assert 0 <= int(a.min()) and int(a.max()) < K
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_samples_stay_in_the_top_k_of_their_distribution(prior):
    labels = torch.arange(32) % CLASSES
    for k in (1, 3):
        s = prior.sample(32, labels, top_k=k, generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            top = torch.topk(prior(s, labels), k, dim=-1).indices  # (B, h*w, k)
        assert (top == s.flatten(1)[..., None]).any(-1).all()
    # without top-k the same draws leave the top 3 somewhere
    s = prior.sample(32, labels, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        top = torch.topk(prior(s, labels), 3, dim=-1).indices
    assert not (top == s.flatten(1)[..., None]).any(-1).all()


def test_class_conditional_samples_follow_their_class_more_with_guidance(prior):
    # how often a sample's bits are lowest under the class it was drawn for: chance is 1/3
    def hits(guidance):
        s = prior.sample(200, 2, guidance=guidance, generator=torch.Generator().manual_seed(0))
        per_class = torch.stack([prior.nll_bits(s, c) for c in range(CLASSES)])
        return (per_class.argmin(0) == 2).float().mean().item()

    unguided, guided = hits(1.0), hits(3.0)
    assert 0.45 < unguided < guided and guided > 0.65


def test_complete_keeps_the_kept_cells(prior):
    codes = rand_codes(6)
    keep = torch.ones(H, W, dtype=torch.bool)
    keep[1, 1:] = False  # resample part of the middle row
    out = prior.complete(codes, keep, labels=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == codes.shape and out.dtype == torch.long
    assert torch.equal(out[:, keep], codes[:, keep])
    assert not torch.equal(out, codes)
    # a per-grid mask; all kept gives the input back
    per_grid = torch.rand(6, H, W, generator=torch.Generator().manual_seed(1)) < 0.5
    out = prior.complete(codes, per_grid, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[per_grid], codes[per_grid])
    assert torch.equal(prior.complete(codes, torch.ones(H, W, dtype=torch.bool)), codes)
    # at low temperature with top-1, a resampled cell is the argmax given the cells before it
    out = prior.complete(codes, keep, labels=1, top_k=1)
    with torch.no_grad():
        best = prior(out, 1).argmax(-1).view(out.shape)
    assert torch.equal(out[:, ~keep], best[:, ~keep])


# ----------------------------------------------------------------------------- files
def test_save_load_round_trip_without_pickle(prior, tmp_path, monkeypatch):
    prior.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {PRIOR_WEIGHTS, PRIOR_CONFIG}

    def no_pickle(*a, **k):
        raise AssertionError("load_prior must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = load_prior(tmp_path)
    assert not loaded.training and loaded.config == prior.config and loaded.num_classes == 3
    codes = rand_codes()
    assert torch.equal(loaded.code_bits(codes, LABELS), prior.code_bits(codes, LABELS))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(
        loaded.sample(4, 1, generator=g), prior.sample(4, 1, generator=g.manual_seed(0))
    )  # noqa: E501


def test_config_round_trips_through_json_and_refuses_future_versions():
    c = PriorConfig(K, H, W, num_classes=2, class_names=["a", "b"], vqvae_fingerprint="ab12")
    assert PriorConfig.from_json(c.to_json()) == c
    assert c.seq_len == H * W and c.uniform_bits == H * W * 4
    with pytest.raises(ValueError, match="newer"):
        PriorConfig.from_dict({**c.to_dict(), "format_version": 99})
    with pytest.raises(ValueError, match="unknown prior config keys"):
        PriorConfig.from_dict({**c.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="class_names"):
        PriorConfig(K, H, W, num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match="divisible"):
        PriorConfig(K, H, W, d_model=30, n_heads=4)


def test_missing_or_broken_prior_files_are_clear_errors(prior, tmp_path):
    with pytest.raises(FileNotFoundError, match="no prior at"):
        load_prior(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="train.prior"):
        load_prior("no-such-model")
    prior.save_pretrained(tmp_path)
    (tmp_path / PRIOR_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_prior(tmp_path)


def test_a_prior_for_another_model_is_refused(tiny_config, tmp_path):
    model = vqvae.VQVAE(tiny_config).eval()
    prior = make_prior(model=model)
    prior.check_compatible(model)  # its own model: fine
    # the fingerprint survives a save/load of the VQ-VAE
    model.save_pretrained(tmp_path / "m")
    assert codebook_fingerprint(vqvae.load_pretrained(tmp_path / "m")) == (
        prior.config.vqvae_fingerprint
    )
    torch.manual_seed(5)
    retrained = vqvae.VQVAE(tiny_config)  # same shapes, another codebook
    with pytest.raises(ValueError, match="fingerprint"):
        prior.check_compatible(retrained)
    other_k = vqvae.VQVAE(tiny_config.replace(codebook_size=64))
    with pytest.raises(ValueError, match="K = 64"):
        prior.check_compatible(other_k)
    other_grid = vqvae.VQVAE(tiny_config.replace(image_size=32))
    with pytest.raises(ValueError, match="8x8"):
        prior.check_compatible(other_grid)
    prior.save_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="belongs to 'tiny'"):
        load_prior(tmp_path / "p", model=retrained)
    # the model's codes fit the prior
    codes = model.encode(torch.rand(2, 1, 28, 28))
    assert prior.nll_bits(codes).shape == (2,)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(prior):
    codes = rand_codes()
    bad = [
        (lambda: prior.sample(2, labels=3), ValueError, r"labels must be in \[0, 2\]"),
        (lambda: prior.sample(2, labels=[0, -2]), ValueError, "labels must be in"),
        (lambda: prior.sample(2, labels=[0.5, 1.0]), TypeError, "labels must be integers"),
        (lambda: prior.sample(2, labels=[0, 1, 2]), ValueError, r"shape \(2,\)"),
        (lambda: prior.sample(2, labels=0.5), TypeError, "labels must be None, an int"),
        (lambda: prior.sample(2, temperature=0), ValueError, "temperature must be > 0"),
        (lambda: prior.sample(2, temperature=-1.0), ValueError, "temperature"),
        (lambda: prior.sample(2, top_k=0), ValueError, r"top_k must be .* \[1, 16\]"),
        (lambda: prior.sample(2, top_k=K + 1), ValueError, "top_k"),
        (lambda: prior.sample(2, guidance=-1.0), ValueError, "guidance"),
        (lambda: prior.sample(0), ValueError, r"n must be in \[1, 1024\]"),
        (lambda: prior.sample(MAX_SAMPLES + 1), ValueError, "n must be in"),
        (lambda: prior.sample(2.0), TypeError, "n must be an int"),
        (lambda: prior.complete(codes, torch.ones(W, H, dtype=torch.bool)), ValueError, "keep"),
        (lambda: prior.complete(codes, torch.ones(H, W)), TypeError, "bool"),
        (lambda: prior.nll_bits(codes + K), ValueError, r"codes must be in \[0, 15\]"),
        (lambda: prior.nll_bits(codes - 1), ValueError, "codes must be in"),
        (lambda: prior.code_bits(codes[:, :2]), ValueError, r"shape \(B, 3, 4\)"),
        (lambda: prior.code_bits(codes.float()), TypeError, "integer tensor"),
        (lambda: make_prior(0).sample(2, labels=1), ValueError, "unconditional"),
    ]
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            call()


def test_an_unconditional_prior_samples_and_scores(tmp_path):
    prior = make_prior(num_classes=0)
    assert prior.num_classes == 0
    s = prior.sample(3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, H, W)
    assert prior.nll_bits(s).shape == (3,)


def test_float16_file_is_half_the_size_and_loads_as_float32(prior, tmp_path):
    prior.save_pretrained(tmp_path / "f32")
    prior.save_pretrained(tmp_path / "f16", dtype="float16")
    size = {d: (tmp_path / d / "prior.safetensors").stat().st_size for d in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]
    loaded = vqvae.load_prior(tmp_path / "f16")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for (name, a), b in zip(prior.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b, atol=1e-3, rtol=1e-3), name
    with pytest.raises(ValueError, match="dtype"):
        prior.save_pretrained(tmp_path / "bad", dtype="int8")


# ----------------------------------------------------------------------------- crafted prior.json
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("d_model", 192.0, "d_model must be an integer, got 192.0"),
        ("num_classes", 4e8, "num_classes must be an integer"),
        ("num_classes", 400_000_000, r"num_classes must be in \[0, 100000\]"),
        ("d_model", 16384, r"d_model must be in \[1, 8192\]"),
        ("n_layers", 10_000, r"n_layers must be in \[1, 64\]"),
        ("height", 0, r"height must be in \[1, 256\]"),
        ("codebook_size", True, "codebook_size must be an integer"),
        ("class_names", "abc", "class_names must be a list of strings"),
        ("class_names", [1, 2, 3], "class_names must be a list of strings"),
        ("class_names", ["a", "b"], "class_names has 2 names for 3 classes"),
        ("dropout", "0.1", "dropout must be a finite number"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("vqvae_name", None, "vqvae_name must be a string"),
        ("format_version", 0, r"format_version must be in \[1, 1\]"),
    ],
)
def test_crafted_prior_config_gives_a_value_error_naming_the_field(
    prior, tmp_path, field, value, message
):
    prior.save_pretrained(tmp_path)
    path = tmp_path / PRIOR_CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(ValueError, match=rf"prior.json is not a valid prior config: {message}"):
        load_prior(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", "not json", "[" * 100_000, '{"codebook_size": 16}'])
def test_prior_json_that_is_no_config_gives_a_value_error(prior, tmp_path, text):
    prior.save_pretrained(tmp_path)
    (tmp_path / PRIOR_CONFIG).write_text(text)
    with pytest.raises(ValueError, match="prior.json is not a valid prior config"):
        load_prior(tmp_path)


@pytest.mark.parametrize(
    "changes",
    [
        dict(d_model=4096, n_heads=2),  # 1.2 G parameters: 4.8 GB to build
        dict(d_model=8192, n_heads=2, n_layers=64, mlp_ratio=16),  # the largest allowed
        dict(num_classes=100_000, class_names=[]),
    ],
)
def test_prior_config_asking_for_a_huge_model_fails_before_allocating(prior, tmp_path, changes):
    prior.save_pretrained(tmp_path)
    path = tmp_path / PRIOR_CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"weights in .*prior.safetensors do not match"):
        load_prior(tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 200 * 1024
