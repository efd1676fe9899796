"""The VQ-VAE through its public API: shapes, encode/decode consistency, gradients, errors."""

import pytest
import torch

import vqvae


@pytest.mark.parametrize(
    "name, shape, grid",
    [
        ("mnist", (1, 28, 28), (7, 7)),
        ("cifar10", (3, 32, 32), (8, 8)),
    ],
)
def test_preset_shapes_and_index_range(name, shape, grid):
    config = vqvae.preset(name)
    assert config.codebook_size == 512 and config.latent_size == grid[0]
    model = vqvae.VQVAE(config).eval()
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.reconstruction.shape == (3, *shape)
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1
    assert out.indices.shape == (3, *grid) and out.indices.dtype == torch.int64
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < 512
    assert model.codebook.shape == (512, config.embedding_dim)
    codes = model.encode(x)
    assert codes.shape == (3, *grid) and codes.dtype == torch.int64
    assert model.decode(codes).shape == (3, *shape)
    assert model.encode_continuous(x).shape == (3, config.embedding_dim, *grid)
    for loss in (out.loss, out.recon_loss, out.codebook_loss, out.commitment_loss):
        assert loss.dim() == 0 and torch.isfinite(loss)
    assert 1 <= int(out.codes_used) <= 3 * grid[0] * grid[1]
    assert 1.0 <= float(out.perplexity) <= float(out.codes_used) + 1e-4


def test_downsample_8():
    config = vqvae.VQVAEConfig(
        in_channels=3,
        image_size=64,
        downsample=8,
        hidden_channels=32,
        res_channels=8,
        embedding_dim=16,
        codebook_size=64,
    )
    model = vqvae.VQVAE(config).eval()
    codes = model.encode(torch.rand(2, 3, 64, 64))
    assert codes.shape == (2, 8, 8) and config.latent_size == 8
    assert model.decode(codes).shape == (2, 3, 64, 64)


def test_config_json_round_trip(tmp_path):
    config = vqvae.preset("cifar10", codebook_size=256, ema_decay=0.95, name="round-trip")
    assert vqvae.VQVAEConfig.from_json(config.to_json()) == config
    config.to_json(tmp_path / "c.json")
    assert vqvae.VQVAEConfig.from_json(tmp_path / "c.json") == config
    assert vqvae.VQVAEConfig.from_json(config.to_json()) != vqvae.preset("cifar10")


def test_config_errors():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        vqvae.preset("nope")
    with pytest.raises(ValueError, match="not divisible by downsample 8"):
        vqvae.VQVAEConfig(image_size=28, downsample=8)
    with pytest.raises(ValueError, match="unknown config keys"):
        vqvae.VQVAEConfig.from_dict({"codebook_size": 8, "bogus": 1})


def test_decode_of_encode_is_the_forward_reconstruction(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config).eval()
    x = mnist_small.test[:8]
    out = model(x)
    codes = model.encode(x)
    assert torch.equal(codes, out.indices)
    assert torch.equal(model.decode(codes), out.reconstruction)


def test_quantize_returns_codebook_rows(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config).eval()
    z = model.encode_continuous(mnist_small.test[:4])
    q, idx = model.quantize(z)
    assert torch.equal(q, model.codebook[idx].permute(0, 3, 1, 2))
    # nearest: no code is closer than the chosen one
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    d = torch.cdist(flat, model.codebook.detach())
    chosen = d.gather(1, idx.reshape(-1, 1)).squeeze(1)
    assert torch.all(chosen <= d.min(1).values + 1e-5)
    assert torch.equal(model.decode_latents(q), model.decode(idx))


def test_eval_forward_does_not_touch_the_model(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(mnist_small.train[:16])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_loss_is_the_sum_of_its_parts(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config.replace(use_ema=False)).train()
    out = model(mnist_small.train[:8])
    assert out.codebook_loss.item() > 0 and out.commitment_loss.item() > 0
    assert torch.allclose(out.loss, out.recon_loss + out.codebook_loss + out.commitment_loss)


def test_straight_through_gradients_reach_the_encoder(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config.replace(use_ema=False, dead_code_threshold=0)).train()
    out = model(mnist_small.train[:8])
    out.recon_loss.backward()
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc)
    assert sum(float(g.abs().sum()) for g in enc) > 0
    # the reconstruction loss alone never moves the codebook (stop-gradient on the codes)
    g = model.quantizer.embedding.grad
    assert g is None or not g.any()


def test_straight_through_gradient_is_identity(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config.replace(use_ema=False)).train()
    x = mnist_small.train[:4]
    z_e = model.encode_continuous(x)
    z_e.retain_grad()
    q = model.quantizer(z_e)
    q.quantized.retain_grad()
    # the forward value is exactly the chosen code vectors
    assert torch.equal(q.quantized.detach(), model.codebook.detach()[q.indices].permute(0, 3, 1, 2))
    loss = (model.decode_latents(q.quantized) - x).pow(2).mean()
    loss.backward()
    assert z_e.grad is not None and z_e.grad.abs().sum() > 0
    assert torch.equal(z_e.grad, q.quantized.grad)


def test_codebook_loss_trains_the_codebook_without_ema(tiny_config, mnist_small):
    model = vqvae.VQVAE(tiny_config.replace(use_ema=False)).train()
    out = model(mnist_small.train[:8])
    out.codebook_loss.backward()
    assert model.quantizer.embedding.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())


# -- clear errors -----------------------------------------------------------------------------
@pytest.fixture
def mnist_model(tiny_config):
    return vqvae.VQVAE(tiny_config).eval()


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(1, 3, 28, 28), "takes 1-channel images, got 3 channels"),
        (torch.rand(1, 1, 30, 30), "multiples of 4, got 30x30"),
        (torch.rand(1, 1, 28, 26), "multiples of 4, got 28x26"),
        (torch.rand(1, 1, 0, 28), "positive multiples of 4, got 0x28"),
        (torch.rand(1, 1, 28, 0), "positive multiples of 4, got 28x0"),
        (torch.full((1, 1, 28, 28), float("nan")), "NaN or infinite"),
        (torch.rand(1, 1, 28, 28) * 255, r"must be in \[0, 1\]"),
        (torch.rand(1, 1, 28, 28) - 0.5, r"must be in \[0, 1\]"),
        (torch.rand(1, 28, 28), r"shape \(B, C, H, W\)"),
    ],
)
def test_bad_images_are_rejected(mnist_model, x, match):
    with pytest.raises(ValueError, match=match):
        mnist_model.encode(x)
    with pytest.raises(ValueError, match=match):
        mnist_model(x)


def test_nan_among_valid_pixels_is_rejected(mnist_model):
    x = torch.rand(2, 1, 28, 28)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mnist_model.encode(x)


def test_integer_images_are_rejected(mnist_model):
    with pytest.raises(TypeError, match="float tensor"):
        mnist_model.encode(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize(
    "codes, error, match",
    [
        (torch.full((1, 7, 7), 32), ValueError, r"must be in \[0, 31\], got values in \[32, 32\]"),
        (torch.full((1, 7, 7), -1), ValueError, r"must be in \[0, 31\]"),
        (torch.zeros(1, 7, 7, dtype=torch.float32), TypeError, "integer tensor"),
        (torch.zeros(7, 7, dtype=torch.long), ValueError, r"shape \(B, h, w\), got \(7, 7\)"),
        (torch.zeros(1, 1, 7, 7, dtype=torch.long), ValueError, r"shape \(B, h, w\)"),
    ],
)
def test_bad_codes_are_rejected(mnist_model, codes, error, match):
    with pytest.raises(error, match=match):
        mnist_model.decode(codes)


def test_int32_codes_decode(mnist_model):
    codes = torch.randint(0, 32, (2, 7, 7))
    assert torch.equal(mnist_model.decode(codes.int()), mnist_model.decode(codes))


def test_decoded_images_are_clamped_to_unit_range(mnist_model, mnist_small):
    # push the decoder's output far above 1: every image the API returns is still in [0, 1]
    last = [m for m in mnist_model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    last.bias.data += 10.0
    codes = torch.randint(0, 32, (2, 7, 7))
    assert torch.equal(mnist_model.decode(codes), torch.ones(2, 1, 28, 28))
    assert torch.equal(mnist_model(mnist_small.test[:2]).reconstruction, torch.ones(2, 1, 28, 28))
    z = mnist_model.encode_continuous(mnist_small.test[:2])
    assert mnist_model.decode_latents(z).max() == 1.0


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(codebook_size=512.0), r"codebook_size must be an integer, got 512\.0 \(float\)"),
        (dict(hidden_channels=True), "hidden_channels must be an integer, got True"),
        (dict(hidden_channels=-1), "hidden_channels must be >= 1, got -1"),
        (dict(hidden_channels=2, downsample=8), "hidden_channels must be >= 4 with downsample 8"),
        (dict(image_size=-4), "image_size must be >= 1, got -4"),
        (dict(image_size=30), "image_size 30 is not divisible by downsample 4"),
        (dict(in_channels=0), "in_channels must be >= 1"),
        (dict(res_channels=0), "res_channels must be >= 1"),
        (dict(res_layers=-1), "res_layers must be >= 0"),
        (dict(codebook_size=1), "codebook_size must be >= 2"),
        (dict(embedding_dim=0), "embedding_dim >= 1"),
        (dict(beta=-0.1), "beta must be >= 0"),
        (dict(beta=float("inf")), "beta must be a finite number"),
        (dict(beta="0.25"), "beta must be a finite number"),
        (dict(ema_decay=0.0), r"ema_decay must be in \(0, 1\)"),
        (dict(ema_eps=-1e-5), "ema_eps must be > 0"),
        (dict(use_ema="yes"), "use_ema must be true or false"),
        (dict(dead_code_threshold=-1), "dead_code_threshold must be >= 0"),
        (dict(name=3), "name must be a string"),
    ],
)
def test_config_checks_types_and_ranges(changes, match):
    with pytest.raises(ValueError, match=match):
        vqvae.VQVAEConfig(**changes)


def test_config_accepts_numpy_numbers_as_plain_ones():
    import numpy as np

    c = vqvae.VQVAEConfig(codebook_size=np.int64(64), beta=np.float32(0.5))
    assert type(c.codebook_size) is int and c.codebook_size == 64
    assert type(c.beta) is float and c.beta == 0.5
    assert vqvae.VQVAEConfig.from_json(c.to_json()) == c
