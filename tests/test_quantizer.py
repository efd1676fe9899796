"""The vector quantizer: EMA updates (checked against hand arithmetic), k-means init,
dead-code restarts, batch statistics."""

import math

import pytest
import torch

import vqvae


def latents(*values, dim=1):
    """Rows of ``values`` (each a D-tuple or a number) as latents (1, D, 1, N)."""
    rows = torch.tensor(
        [v if isinstance(v, (tuple, list)) else [v] for v in values], dtype=torch.float32
    )
    return rows.t().reshape(1, dim, 1, len(values))


def test_training_forward_moves_the_ema_codebook_and_eval_does_not(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config)
    x = mnist_small.train[:32]
    before = model.codebook.detach().clone()
    model.eval()(x)
    assert torch.equal(model.codebook, before)
    model.train()(x)
    assert not torch.equal(model.codebook, before)
    assert model.codebook.grad is None and not model.codebook.requires_grad


def test_ema_update_matches_hand_arithmetic():
    decay, eps, K = 0.5, 0.1, 2
    vq = vqvae.VectorQuantizer(K, 1, use_ema=True, ema_decay=decay, ema_eps=eps).train()
    vq.embedding.data = torch.tensor([[0.0], [10.0]])  # EMA buffers start at zero

    # step 1: 1, 2 -> code 0; 9 -> code 1
    out = vq(latents(1.0, 2.0, 9.0))
    assert out.indices.flatten().tolist() == [0, 0, 1]
    hidden_n = [0.5 * 0 + 0.5 * 2, 0.5 * 0 + 0.5 * 1]  # [1.0, 0.5]
    hidden_s = [0.5 * 0 + 0.5 * 3.0, 0.5 * 0 + 0.5 * 9.0]  # [1.5, 4.5]
    debias = 1 - 0.5**1
    n_i = [h / debias for h in hidden_n]  # [2, 1]
    n = sum(n_i)
    smoothed = [(c + eps) / (n + K * eps) * n for c in n_i]  # [1.96875, 1.03125]
    expected = [hidden_s[0] / debias / smoothed[0], hidden_s[1] / debias / smoothed[1]]
    assert expected == pytest.approx([3 / 1.96875, 9 / 1.03125])
    assert vq.codebook.flatten().tolist() == pytest.approx(expected, rel=1e-6)

    # step 2, different counts: 0, 1 -> code 0 (now ~1.52); 9, 10 -> code 1 (now ~8.73)
    out = vq(latents(0.0, 1.0, 9.0, 10.0))
    assert out.indices.flatten().tolist() == [0, 0, 1, 1]
    hidden_n = [0.5 * hidden_n[0] + 0.5 * 2, 0.5 * hidden_n[1] + 0.5 * 2]  # [1.5, 1.25]
    hidden_s = [0.5 * hidden_s[0] + 0.5 * 1.0, 0.5 * hidden_s[1] + 0.5 * 19.0]  # [1.25, 11.75]
    debias = 1 - 0.5**2
    n_i = [h / debias for h in hidden_n]
    n = sum(n_i)
    smoothed = [(c + eps) / (n + K * eps) * n for c in n_i]
    expected = [hidden_s[0] / debias / smoothed[0], hidden_s[1] / debias / smoothed[1]]
    assert vq.codebook.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    # the quantized output is the codebook as it is after this step's update
    assert out.quantized.flatten().tolist() == pytest.approx([expected[i] for i in (0, 0, 1, 1)])
    assert float(out.codebook_loss) == 0.0


def test_ema_two_dimensional_after_set_codebook():
    """set_codebook gives the codes a long history (debias ~ 1) with mass ``cluster_size``."""
    decay, eps = 0.5, 1e-6
    vq = vqvae.VectorQuantizer(2, 2, use_ema=True, ema_decay=decay, ema_eps=eps).train()
    vq.set_codebook(torch.tensor([[0.0, 0.0], [4.0, 4.0]]), torch.tensor([2.0, 1.0]))
    vq(latents((1.0, 0.0), (0.0, 3.0), (5.0, 5.0), dim=2))
    n_i = [0.5 * 2 + 0.5 * 2, 0.5 * 1 + 0.5 * 1]  # [2, 1]
    s0 = [0.5 * 0 + 0.5 * 1.0, 0.5 * 0 + 0.5 * 3.0]  # old sum 0 * 2, new 1+0, 0+3
    s1 = [0.5 * 4 + 0.5 * 5.0, 0.5 * 4 + 0.5 * 5.0]  # old sum 4 * 1, new 5
    n = sum(n_i)
    sm = [(c + eps) / (n + 2 * eps) * n for c in n_i]
    expected = [[s0[0] / sm[0], s0[1] / sm[0]], [s1[0] / sm[1], s1[1] / sm[1]]]
    assert vq.codebook.tolist()[0] == pytest.approx(expected[0], rel=1e-5)
    assert vq.codebook.tolist()[1] == pytest.approx(expected[1], rel=1e-5)


def test_batch_statistics():
    vq = vqvae.VectorQuantizer(4, 1).eval()
    vq.embedding.data = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    out = vq(latents(0.1, 0.2, 9.9, 21.0))  # codes 0, 0, 1, 2
    assert out.indices.flatten().tolist() == [0, 0, 1, 2]
    assert int(out.codes_used) == 3
    p = [0.5, 0.25, 0.25]
    assert float(out.perplexity) == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    # commitment = beta * mean((z - q)^2)
    assert float(out.commitment_loss) == pytest.approx(
        0.25 * (0.01 + 0.04 + 0.01 + 1.0) / 4, rel=1e-5
    )


def test_kmeans_init_finds_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(8, 4, generator=g) * 5
    samples = centres.repeat_interleave(64, 0) + 0.05 * torch.randn(512, 4, generator=g)
    samples = samples[torch.randperm(512, generator=g)]
    vq = vqvae.VectorQuantizer(8, 4, use_ema=True)
    inertia = vq.init_kmeans(samples)
    d = torch.cdist(centres, vq.codebook.detach())
    nearest = d.argmin(1)
    assert sorted(nearest.tolist()) == list(range(8))  # one code per true centre
    assert d.min(1).values.max() < 0.05
    assert float(inertia) < 4 * 0.05**2 * 1.5  # about D * sigma^2
    # the EMA state agrees with the new codebook: a step on the same data barely moves it
    before = vq.codebook.detach().clone()
    vq.train()(samples.t().reshape(1, 4, 1, 512))
    assert (vq.codebook - before).abs().max() < 0.05


def test_kmeans_init_accepts_latent_grids_and_needs_enough_samples():
    vq = vqvae.VectorQuantizer(4, 2)
    grid = torch.tensor([[0.0, 0.0], [0.0, 9.0], [9.0, 0.0], [9.0, 9.0]]).repeat(8, 1)
    vq.init_kmeans(grid.t().reshape(1, 2, 4, 8))  # (B, D, h, w)
    got = sorted(tuple(round(v) for v in row) for row in vq.codebook.tolist())
    assert got == [(0, 0), (0, 9), (9, 0), (9, 9)]
    with pytest.raises(ValueError, match="at least K=4 samples, got 3"):
        vq.init_kmeans(torch.randn(3, 2))


@pytest.mark.parametrize("use_ema", [False, True])
def test_dead_code_restart(use_ema):
    threshold = 3
    vq = vqvae.VectorQuantizer(4, 2, use_ema=use_ema, dead_code_threshold=threshold).train()
    # codes 0 and 1 sit on the data; codes 2 and 3 are far away and never chosen
    vq.set_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]]))

    def batch():
        return torch.rand(1, 2, 4, 4)  # all in [0, 1]^2, nearest to code 0 or 1

    for step in range(1, threshold):
        vq(batch())
        assert vq.steps_unused[2:].tolist() == [step, step]
        assert vq.codebook[2:].abs().min() > 10  # not yet restarted
    assert vq.steps_unused[:2].tolist() == [0, 0]

    z = batch()
    vq(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in (2, 3):
        assert any(torch.equal(vq.codebook[k].detach(), r) for r in rows), k
    assert vq.steps_unused.tolist() == [0, 0, 0, 0]


def test_no_restarts_in_eval_mode():
    vq = vqvae.VectorQuantizer(4, 2, dead_code_threshold=1).eval()
    vq.set_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]]))
    before = vq.codebook.detach().clone()
    for _ in range(3):
        vq(torch.rand(2, 2, 4, 4))
    assert torch.equal(vq.codebook, before) and not vq.steps_unused.any()


def test_quantizer_rejects_wrong_latent_shape():
    vq = vqvae.VectorQuantizer(4, 2)
    with pytest.raises(
        ValueError, match=r"expected latents of shape \(B, 2, h, w\), got \(1, 3, 2, 2\)"
    ):
        vq(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"expected codebook of shape \(4, 2\)"):
        vq.set_codebook(torch.zeros(3, 2))


def test_training_step_chooses_codes_before_and_outputs_them_after_its_ema_update():
    """The documented order: indices from the codebook before the step, vectors (and the
    commitment loss) from the codebook after the step's EMA update."""
    vq = vqvae.VectorQuantizer(2, 1, use_ema=True, ema_decay=0.5, beta=1.0).train()
    vq.set_codebook(torch.tensor([[0.0], [10.0]]))
    z = latents(4.9, 5.1, 5.2)  # 4.9 is nearer code 0 now, nearer code 1 after the update
    before = vq.codebook.detach().clone()
    expected_idx = vq.quantize(z)[1]  # the pure lookup with the old codebook
    out = vq(z)
    after = vq.codebook.detach()
    assert not torch.equal(after, before)
    assert torch.equal(out.indices, expected_idx)
    assert out.indices.flatten().tolist() == [0, 1, 1]
    assert torch.equal(out.quantized, after[out.indices].permute(0, 3, 1, 2))
    assert not torch.equal(out.quantized, before[out.indices].permute(0, 3, 1, 2))
    q = after[out.indices.flatten(), 0]
    assert float(out.commitment_loss) == pytest.approx(float(((z.flatten() - q) ** 2).mean()))
    # with the new codebook 4.9 would go to code 1: indices were not re-chosen after
    assert vq.quantize(z)[1].flatten().tolist() == [1, 1, 1]


@pytest.mark.parametrize("training", [False, True])
def test_quantize_is_pure_in_any_mode(training):
    vq = vqvae.VectorQuantizer(4, 2, use_ema=True, dead_code_threshold=1).train(training)
    vq.set_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]]))
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.rand(2, 2, 3, 3)
    q, idx = vq.quantize(z)
    assert q.shape == (2, 2, 3, 3) and idx.shape == (2, 3, 3) and idx.dtype == torch.int64
    assert torch.equal(q, vq.lookup(idx))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.equal(idx.flatten(), torch.cdist(flat, vq.codebook.detach()).argmin(1))
    assert all(torch.equal(v, state[k]) for k, v in vq.state_dict().items())
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 2, h, w\)"):
        vq.quantize(torch.zeros(1, 3, 2, 2))


class RoundingQuantizer(torch.nn.Module):
    """A quantizer written only from the Quantizer contract: codes are the integers
    0..K-1 on the first latent channel, every other channel zero."""

    def __init__(self, codebook_size: int, embedding_dim: int):
        super().__init__()
        self.codebook_size, self.embedding_dim = codebook_size, embedding_dim
        cb = torch.zeros(codebook_size, embedding_dim)
        cb[:, 0] = torch.arange(codebook_size)
        self.register_buffer("cb", cb)

    @property
    def codebook(self):
        return self.cb

    def lookup(self, indices):
        return self.cb[indices].permute(0, 3, 1, 2)

    def quantize(self, z_e):
        idx = z_e[:, 0].round().clamp(0, self.codebook_size - 1).long()
        return self.lookup(idx), idx

    def forward(self, z_e):
        q, idx = self.quantize(z_e)
        zero = z_e.new_zeros(())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size)
        return vqvae.QuantizerOutput(
            q.detach() + z_e - z_e.detach(),
            idx,
            zero,
            zero,
            vqvae.metrics.perplexity(counts),
            (counts > 0).sum(),
        )


def test_any_quantizer_meeting_the_contract_plugs_into_the_model(tiny_config, mnist_small):
    assert isinstance(vqvae.VectorQuantizer(4, 2), vqvae.Quantizer)
    assert not isinstance(torch.nn.Linear(2, 2), vqvae.Quantizer)
    model = vqvae.VQVAE(tiny_config).eval()
    model.quantizer = RoundingQuantizer(tiny_config.codebook_size, tiny_config.embedding_dim)
    assert isinstance(model.quantizer, vqvae.Quantizer)
    x = mnist_small.test[:4]
    codes = model.encode(x)
    z = model.encode_continuous(x)
    assert torch.equal(codes, z[:, 0].round().clamp(0, 31).long())
    out = model(x)
    assert torch.equal(out.indices, codes)
    assert torch.equal(model.decode(codes), out.reconstruction)
    assert torch.equal(model.codebook, model.quantizer.cb)


def test_latent_distances_rank_each_cells_codes_with_the_chosen_one_first(tiny_config):
    from vqvae.codes import latent_distances

    model = vqvae.VQVAE(tiny_config).eval()
    x = torch.rand(1, 1, 21, 38)
    codes, z_e = model.encode_image(x, return_latents=True)
    idx, dist = latent_distances(model, z_e, codes, 4)
    assert idx.shape == dist.shape == (1, 6, 10, 4)
    assert torch.equal(idx[..., 0], codes), "the quantizer's choice first"
    assert (dist.diff(dim=-1) >= 0).all(), "then the next nearest"
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
    every = torch.cdist(flat, model.codebook.detach()).view(1, 6, 10, -1)
    assert torch.allclose(dist, every.gather(-1, idx), atol=1e-5)
    assert torch.allclose(dist, every.sort(-1).values[..., :4], atol=1e-5)
    # memory bounded by chunks: the same result a few latents at a time
    small = latent_distances(model, z_e, codes, 4, chunk=7)
    assert torch.equal(small[0], idx) and torch.allclose(small[1], dist)
    # the chosen code is whatever the grid holds, first with its own distance
    other = (codes + 1) % tiny_config.codebook_size
    idx2, dist2 = latent_distances(model, z_e, other, 4)
    assert torch.equal(idx2[..., 0], other)
    assert torch.allclose(dist2[..., 0], every.gather(-1, other[..., None])[..., 0], atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        latent_distances(model, z_e, codes[:, :3], 4)
