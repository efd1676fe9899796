"""The any-size grid prior: its pass schedule, causality, and integer counts that the
encoder (every step in one batch) and the decoder (step by step) compute alike."""

import numpy as np
import pytest
import torch

from vqvae import VQVAE, VQVAEConfig
from vqvae.grid_prior import (
    EXP_TABLE,
    GridPrior,
    GridPriorConfig,
    num_passes,
    pass_map,
    schedule,
)


def small_prior(K=16, S=2, seed=0, train_steps=30) -> GridPrior:
    """A small prior trained a few steps on structured codes (so its counts are not flat),
    then frozen."""
    torch.manual_seed(seed)
    p = GridPrior(GridPriorConfig(codebook_size=K, num_stages=S, embed_dim=4, channels=12,
                                  layers=2))  # fmt: skip
    base = torch.randint(0, K, (64, 1, 3, 3)).repeat_interleave(3, 2).repeat_interleave(3, 3)
    codes = torch.cat([base, (base + torch.randint(0, 2, base.shape)) % K], 1)[:, :S]
    opt = torch.optim.Adam(p.parameters(), 1e-2)
    for _ in range(train_steps):
        loss = p.loss(codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    p.eval().freeze(codes)
    return p


@pytest.fixture(scope="module")
def prior():
    return small_prior()


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (7, 5), (8, 8), (13, 4)])
def test_every_cell_is_coded_once_per_stage(h, w):
    for s in range(3):
        m = pass_map(h, w, s)
        assert m.shape == (h, w)
        assert set(m.flatten().tolist()) <= set(range(num_passes(s)))
    assert schedule(2) == [(0, p) for p in range(num_passes(0))] + [(1, 0), (1, 1)]


def test_stage_one_leaves_few_cells_without_context():
    m = pass_map(64, 64, 0)
    assert (m == 0).float().mean() == 1 / 16


def test_counts_are_the_same_batched_and_step_by_step(prior):
    """What the encoder computes in one batch equals what the decoder computes a step at a
    time, seeing only the codes decoded so far (the rest zero), over a thousand grids."""
    g = torch.Generator().manual_seed(1)
    n_grids = 0
    for _ in range(250):
        h, w = (int(v) for v in torch.randint(1, 12, (2,), generator=g))
        codes = torch.randint(0, 16, (1, 2, h, w), generator=g)
        steps = schedule(2)
        batched = prior.counts(codes, steps)
        seen = torch.zeros_like(codes)
        for (s, p), table in zip(steps, batched, strict=True):
            alone = prior.counts(seen, [(s, p)])[0]
            assert np.array_equal(alone, table)
            cells = pass_map(h, w, s) == p
            seen[0, s][cells] = codes[0, s][cells]
        n_grids += 1
    # four more shapes per grid: the same counts whatever else shares the batch
    for _ in range(750):
        h, w = (int(v) for v in torch.randint(1, 6, (2,), generator=g))
        codes = torch.randint(0, 16, (1, 2, h, w), generator=g)
        steps = schedule(2)
        batched = prior.counts(codes, steps)
        single = [prior.counts(codes, [st])[0] for st in steps]
        assert all(np.array_equal(a, b) for a, b in zip(batched, single, strict=True))
        n_grids += 1
    assert n_grids == 1000


def test_a_step_never_depends_on_codes_decoded_after_it(prior):
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 16, (1, 2, 9, 10), generator=g)
    for s, p in schedule(2):
        later = pass_map(9, 10, s) >= p  # this pass and later ones, in this stage
        other = codes.clone()
        other[0, s][later] = torch.randint(0, 16, (int(later.sum()),), generator=g)
        other[0, s + 1 :] = torch.randint(0, 16, other[0, s + 1 :].shape, generator=g)
        assert np.array_equal(prior.counts(codes, [(s, p)])[0], prior.counts(other, [(s, p)])[0])


def test_counts_depend_on_context(prior):
    """The network is not a constant: neighbours change a cell's counts."""
    a = torch.zeros(1, 2, 8, 8, dtype=torch.long)
    b = torch.full((1, 2, 8, 8), 5)
    assert not np.array_equal(prior.counts(a, [(0, 4)])[0], prior.counts(b, [(0, 4)])[0])


def test_integer_network_is_exact(prior):
    """float32 convolutions of the frozen integers equal the same sums in float64: every
    product and partial sum is an integer below 2^24."""
    codes = torch.randint(0, 16, (3, 2, 11, 7))
    stage = torch.tensor([0, 1, 1])
    known = torch.rand(3, 11, 7) < 0.5
    x = prior._input(prior.embed_int.float(), codes, stage, known, float(prior.flag_int))
    a32 = torch.nn.functional.conv2d(x, prior.w0.float(), padding=1)
    a64 = torch.nn.functional.conv2d(x.double(), prior.w0.double(), padding=1)
    assert torch.equal(a32.double(), a64)
    assert a64.abs().max() < 2**24


def test_integer_counts_cost_about_the_float_bits():
    prior = small_prior(train_steps=60)
    codes = torch.randint(0, 16, (1, 2, 16, 16))
    float_bits = float(prior.nll_bits(codes))
    int_bits = 0.0
    for (s, p), table in zip(schedule(2), prior.counts(codes, schedule(2)), strict=True):
        sym = codes[0, s][pass_map(16, 16, s) == p].numpy()
        int_bits += float(np.log2(table.sum(1) / table[np.arange(len(sym)), sym]).sum())
    assert abs(int_bits - float_bits) / float_bits < 0.03


def test_exp_table():
    assert EXP_TABLE[0] == 2**16 and EXP_TABLE[-1] == 1
    assert np.all(np.diff(EXP_TABLE) <= 0)
    assert EXP_TABLE[16] == round(2**16 * np.exp(-1))


def test_save_and_load_keep_the_counts(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    again = GridPrior.from_pretrained(tmp_path)
    codes = torch.randint(0, 16, (1, 2, 6, 9))
    for a, b in zip(prior.counts(codes, schedule(2)), again.counts(codes, schedule(2)),
                    strict=True):  # fmt: skip
        assert np.array_equal(a, b)


def test_an_unfrozen_prior_refuses_to_code():
    p = GridPrior(GridPriorConfig(codebook_size=8, channels=8, embed_dim=2, layers=1))
    with pytest.raises(ValueError, match="not frozen"):
        p.counts(torch.zeros(1, 1, 4, 4, dtype=torch.long), schedule(1))


def test_config_refuses_inexact_widths():
    with pytest.raises(ValueError, match="channels"):
        GridPriorConfig(codebook_size=16, channels=200)
    with pytest.raises(ValueError, match="exact"):
        GridPriorConfig(codebook_size=16, num_stages=8, embed_dim=16)


def test_for_model_ties_the_prior_to_every_stage():
    m = VQVAE(VQVAEConfig(hidden_channels=8, res_channels=4, embedding_dim=4, codebook_size=16,
                          num_stages=2))  # fmt: skip
    c = GridPriorConfig.for_model(m)
    assert (c.codebook_size, c.num_stages) == (16, 2) and len(c.vqvae_fingerprint) == 16


def test_complete_resamples_only_the_cells_not_kept(prior):
    codes = torch.randint(0, 16, (2, 9, 13))
    keep = torch.ones(9, 13, dtype=torch.bool)
    keep[2:6, 3:9] = False
    g = torch.Generator().manual_seed(0)
    out = prior.complete(codes, keep, generator=g)
    assert out.shape == codes.shape and torch.equal(out[:, keep], codes[:, keep])
    assert not torch.equal(out[:, ~keep], codes[:, ~keep])
    again = prior.complete(codes, keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="temperature"):
        prior.complete(codes, keep, temperature=0)


def whole_grid_complete(prior, codes, keep, generator):
    """GridPrior.complete's passes run over the whole grid (the reference for its window)."""
    codes, stage = codes.clone(), torch.zeros(codes.shape[0], dtype=torch.long)
    keep = keep.expand(codes.shape)
    m = pass_map(*codes.shape[1:], 0)
    for p in range(num_passes(0)):
        todo, known = ~keep & (m == p), keep | (m < p)
        if todo.any():
            logits = prior.logits(codes[:, None], stage, known).permute(0, 2, 3, 1)[todo]
            codes[todo] = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
    return codes


@pytest.mark.parametrize("box", [(9, 10, 12, 14), (0, 0, 2, 3), (17, 19, 20, 23), (5, 1, 6, 22)])
def test_complete_over_a_window_equals_the_whole_grid(prior, box):
    """complete() runs its passes over the marked cells' window only (aligned to the pass
    schedule): the same draws as over the whole grid, and cells beyond the network's reach
    of the marked ones cannot matter."""
    codes = torch.randint(0, 16, (2, 20, 23))
    keep = torch.ones(20, 23, dtype=torch.bool)
    keep[box[0] : box[2], box[1] : box[3]] = False
    out = prior.complete(codes, keep, generator=torch.Generator().manual_seed(3))
    expect = whole_grid_complete(prior, codes, keep, torch.Generator().manual_seed(3))
    assert torch.equal(out, expect) and not torch.equal(out, codes)
    assert torch.equal(prior.complete(codes, torch.ones(20, 23, dtype=torch.bool)), codes)


def test_load_grid_prior_checks_the_pairing(prior, tmp_path):
    from vqvae.grid_prior import load_grid_prior

    m = VQVAE(VQVAEConfig(hidden_channels=8, res_channels=4, embedding_dim=4, codebook_size=16,
                          num_stages=2))  # fmt: skip
    prior.save_pretrained(tmp_path / "p")
    assert bool(load_grid_prior(tmp_path / "p", model=m).frozen)  # not tied: any K=16, S=2
    tied = GridPrior(GridPriorConfig.for_model(m, channels=8, embed_dim=2, layers=1))
    tied.save_pretrained(tmp_path / "unfrozen")
    with pytest.raises(ValueError, match="not frozen"):
        load_grid_prior(tmp_path / "unfrozen", model=m)
    tied.freeze(torch.zeros(2, 2, 4, 4, dtype=torch.long))
    tied.save_pretrained(tmp_path / "tied")
    other = VQVAE(VQVAEConfig(hidden_channels=8, res_channels=4, embedding_dim=4,
                              codebook_size=16, num_stages=2))  # fmt: skip
    with pytest.raises(ValueError, match="another VQ-VAE"):
        load_grid_prior(tmp_path / "tied", model=other)


def test_stage_bits_add_up_to_the_bits_of_the_stages_so_far(prior):
    codes = torch.randint(0, 16, (3, 2, 7, 9))
    per_stage = prior.stage_bits(codes)
    assert per_stage.shape == (3, 2)
    assert torch.allclose(per_stage[:, 0], prior.nll_bits(codes, 1))
    assert torch.allclose(per_stage.sum(1), prior.nll_bits(codes))
