"""psnr, ssim, MS-SSIM, BD-rate and CodebookUsage on cases worked out by hand."""

import math

import numpy as np
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


# -- MS-SSIM -------------------------------------------------------------------------------------


def _photo(side: int = 176) -> torch.Tensor:
    """A real photo's centre, (1, 3, side, side) in [0, 1]."""
    import skimage.data

    a = skimage.data.astronaut()[100 : 100 + side, 150 : 150 + side]
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from vqvae.compare import decode_classic, encode_classic

    y = decode_classic(encode_classic(x[0], "jpeg", quality))
    return torch.from_numpy(np.array(y)).permute(2, 0, 1)[None].float() / 255


def test_ms_ssim_of_identical_images_is_one_and_its_db_capped():
    x = _photo()
    assert vqvae.metrics.ms_ssim(x, x).tolist() == pytest.approx([1.0], abs=1e-6)
    db = vqvae.metrics.ms_ssim_db(torch.ones(2))
    assert db.tolist() == [100.0, 100.0] and vqvae.metrics.ms_ssim_db(1.0) == 100.0
    assert vqvae.metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert vqvae.metrics.ms_ssim_db(0.999) == pytest.approx(30.0)


def test_ms_ssim_is_the_library_s_five_scale_value_and_falls_with_quality():
    from pytorch_msssim import ms_ssim as reference

    x = _photo()
    ys = [_jpeg(x, q) for q in (5, 30, 90)]
    got = [float(vqvae.metrics.ms_ssim(y, x)[0]) for y in ys]
    want = [float(reference(y, x, data_range=1.0)) for y in ys]
    assert got == pytest.approx(want, abs=1e-6)
    assert got[0] < got[1] < got[2] < 1.0
    batch = vqvae.metrics.ms_ssim(torch.cat(ys), x.expand(3, -1, -1, -1))
    assert batch.tolist() == pytest.approx(got, abs=1e-6)  # per image


@pytest.mark.parametrize("side", [32, 160])
def test_ms_ssim_refuses_images_too_small_for_five_scales(side):
    x = torch.rand(1, 3, side, 200)
    with pytest.raises(ValueError, match="at least 161 x 161"):
        vqvae.metrics.ms_ssim(x, x)


# -- BD-rate ---------------------------------------------------------------------------------------
# A curve whose quality grows 3 dB per doubling of the rate: q = 28 + 3 log2(r / 0.1).
ANCHOR = ([0.1, 0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 34.0, 37.0, 40.0])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_of_a_curve_needing_a_fixed_fraction_of_the_bits(method):
    from vqvae.metrics import bd_psnr, bd_rate

    cheaper = ([0.8 * r for r in ANCHOR[0]], ANCHOR[1])
    assert bd_rate(ANCHOR, cheaper, method=method) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(cheaper, ANCHOR, method=method) == pytest.approx(25.0, abs=1e-9)
    # at equal rate the cheaper curve is 3 log2(1 / 0.8) dB better
    assert bd_psnr(ANCHOR, cheaper, method=method) == pytest.approx(3 * math.log2(1.25))
    # the points' order does not matter
    shuffled = ([cheaper[0][i] for i in (3, 0, 4, 1, 2)], [cheaper[1][i] for i in (3, 0, 4, 1, 2)])
    assert bd_rate(ANCHOR, shuffled, method=method) == pytest.approx(-20.0, abs=1e-9)


def test_bd_rate_averages_over_the_overlap_only():
    """log10 r is linear in q for both curves (both methods are exact on a line); the test
    curve's log rate is (q - 30) / 100 higher. Its qualities 34..44 overlap the anchor's
    30..40 on [34, 40], where the mean difference is 0.07: 10**0.07 - 1 = +17.49 %."""
    from vqvae.metrics import bd_rate

    qa, qt = [30.0, 32, 34, 36, 38, 40], [34.0, 36, 38, 40, 42, 44]
    anchor = ([10 ** (q / 10 - 3) for q in qa], qa)
    test = ([10 ** (q / 10 - 3 + (q - 30) / 100) for q in qt], qt)
    for method in ("pchip", "cubic"):
        assert bd_rate(anchor, test, method=method) == pytest.approx(100 * (10**0.07 - 1))


def test_rate_at_interpolates_a_curve_and_refuses_outside_it():
    from vqvae.metrics import rate_at

    assert rate_at(ANCHOR, 31.0) == pytest.approx(0.2)
    assert rate_at(ANCHOR, 32.5) == pytest.approx(0.2 * 2**0.5)  # log-linear between points
    with pytest.raises(ValueError, match="outside the curve's range"):
        rate_at(ANCHOR, 41.0)


@pytest.mark.parametrize(
    "anchor, test, method, words",
    [
        (ANCHOR, ([1.0, 2.0], [41.0, 44.0]), "pchip", "do not overlap"),
        (ANCHOR, ([0.5], [33.0]), "pchip", "1 point.*at least 2"),
        (ANCHOR, ([0.1, 0.2, 0.4], [28.0, 31.0, 34.0]), "cubic", "3 point.*at least 4"),
        (ANCHOR, ([0.1, 0.2, 0.4], [30.0, 30.0, 34.0]), "pchip", "same quality"),
        (ANCHOR, ([0.0, 0.2, 0.4], [28.0, 31.0, 34.0]), "pchip", "rates > 0"),
        (ANCHOR, ([0.1, 0.2], [28.0]), "pchip", "one length"),
        (ANCHOR, ANCHOR, "akima", "method must be"),
    ],
)
def test_bd_rate_refuses_what_it_cannot_measure(anchor, test, method, words):
    from vqvae.metrics import bd_rate

    with pytest.raises(ValueError, match=words):
        bd_rate(anchor, test, method=method)
