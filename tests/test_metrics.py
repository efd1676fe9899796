"""psnr, ssim and CodebookUsage on cases worked out by hand."""

import math

import pytest
import torch

import vqvae


def test_psnr_of_identical_images_is_capped():
    x = torch.rand(2, 3, 8, 8)
    p = vqvae.psnr(x, x)
    assert p.shape == (2,) and torch.isfinite(p).all()
    assert p.tolist() == [100.0, 100.0]


@pytest.mark.parametrize("mse", [0.01, 0.0025, 1e-4])
def test_psnr_matches_its_definition(mse):
    x = torch.full((1, 1, 4, 4), 0.5)
    y = x + math.sqrt(mse)
    assert float(vqvae.psnr(x, y)) == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert float(vqvae.psnr(x, y, data_range=2.0)) == pytest.approx(
        10 * math.log10(4 / mse), abs=1e-3
    )


def test_psnr_is_per_image():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    assert vqvae.psnr(x, y).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)


def test_ssim_identical_is_one_and_noise_lowers_it(mnist_small):
    x = mnist_small.test[:4]
    assert vqvae.ssim(x, x).tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    little = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    lots = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_little, s_lots = vqvae.ssim(x, little), vqvae.ssim(x, lots)
    assert s_little.shape == (4,)
    assert (s_lots < s_little).all() and (s_little < 0.99).all()
    assert torch.allclose(vqvae.ssim(little, x), s_little, atol=1e-6)  # symmetric


def test_ssim_of_a_constant_shift_is_the_luminance_term():
    # flat images: variances are 0, so SSIM = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    x, y = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert float(vqvae.ssim(x, y)) == pytest.approx(expected, rel=1e-4)


def test_codebook_usage_counts_over_batches():
    usage = vqvae.CodebookUsage(8)
    usage.update(torch.tensor([[[0, 0], [1, 2]]]))
    usage.update(torch.tensor([[0, 0]]))  # counts: 0 x4, 1 x1, 2 x1
    assert usage.counts.tolist() == [4, 1, 1, 0, 0, 0, 0, 0]
    assert usage.used == 3 and usage.fraction == 3 / 8
    p = [4 / 6, 1 / 6, 1 / 6]
    assert usage.perplexity == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))


def test_codebook_usage_uniform_perplexity_is_k():
    usage = vqvae.CodebookUsage(16)
    usage.update(torch.arange(16).repeat(3))
    assert usage.used == 16 and usage.fraction == 1.0
    assert usage.perplexity == pytest.approx(16.0)


def test_one_perplexity_for_batches_datasets_and_the_app():
    counts = torch.tensor([4, 1, 1, 0])
    p = [4 / 6, 1 / 6, 1 / 6]
    expected = math.exp(-sum(q * math.log(q) for q in p))
    got = vqvae.metrics.perplexity(counts)
    assert got.dim() == 0 and float(got) == pytest.approx(expected, rel=1e-6)
    assert vqvae.metrics.perplexity(counts.double()).dtype == torch.float64
    assert float(vqvae.metrics.perplexity(torch.zeros(8))) == 1.0  # nothing counted yet
    assert float(vqvae.metrics.perplexity(torch.ones(8))) == pytest.approx(8.0)
    # the quantizer's batch statistic is the same function of the batch's code counts
    vq = vqvae.VectorQuantizer(4, 1).eval()
    vq.embedding.data = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    z = torch.tensor([0.0, 0.1, 0.2, 0.3, 10.0, 20.0]).view(1, 1, 1, 6)
    assert float(vq(z).perplexity) == pytest.approx(expected, rel=1e-6)


def test_one_bits_per_image():
    assert vqvae.metrics.bits_per_image(7, 7, 512) == 7 * 7 * 9
    assert vqvae.metrics.bits_per_image(8, 4, 2) == 32
    c = vqvae.preset("cifar10", codebook_size=1024)
    assert c.bits_per_image == vqvae.metrics.bits_per_image(8, 8, 1024) == 640
