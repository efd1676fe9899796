"""Latent operations: interpolation between two images, the code atlas."""

import pytest
import torch

import vqvae


@pytest.fixture
def model(tiny_config):
    return vqvae.VQVAE(tiny_config).eval()


@pytest.mark.parametrize("path", ["lerp", "slerp", "codebook"])
def test_interpolate_frames(model, mnist_small, path):
    x0, x1 = mnist_small.test[0], mnist_small.test[1]
    frames = vqvae.interpolate(model, x0, x1, steps=5, path=path)
    assert frames.shape == (5, 1, 28, 28)
    assert frames.min() >= 0 and frames.max() <= 1
    ends = model.decode(model.encode(torch.stack([x0, x1])))
    # both ends are the reconstructions of the two images (batched differently: allclose)
    assert torch.allclose(frames[0], ends[0], atol=1e-6)
    assert torch.allclose(frames[-1], ends[1], atol=1e-6)
    assert not torch.allclose(frames[0], frames[-1])


def test_interpolate_accepts_batched_single_images(model, mnist_small):
    x0, x1 = mnist_small.test[:1], mnist_small.test[1:2]
    a = vqvae.interpolate(model, x0, x1, steps=3)
    b = vqvae.interpolate(model, x0[0], x1[0], steps=3)
    assert torch.equal(a, b)


def test_interpolate_rejects_bad_arguments(model, mnist_small):
    x0, x1 = mnist_small.test[0], mnist_small.test[1]
    with pytest.raises(ValueError, match="unknown interpolation path 'cubic'"):
        vqvae.interpolate(model, x0, x1, path="cubic")
    for steps in (1, 0, -3, 10**6):
        with pytest.raises(ValueError, match=f"steps must be between 2 and 1024, got {steps}"):
            vqvae.interpolate(model, x0, x1, steps=steps)
    with pytest.raises(ValueError, match="same shape"):
        vqvae.interpolate(model, x0, torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        vqvae.interpolate(model, x0 * 255, x1)


def test_code_atlas_decodes_each_code_alone(model):
    atlas = vqvae.code_atlas(model, batch=10)  # several batches
    assert atlas.shape == (32, 1, 28, 28)
    k = 17
    assert torch.allclose(atlas[k], model.decode(torch.full((1, 7, 7), k))[0], atol=1e-6)
    assert vqvae.code_atlas(model, size=2).shape == (32, 1, 8, 8)


def test_color_code_map(model):
    codes = torch.tensor([[0, 1], [1, 31]])
    img = vqvae.color_code_map(codes, 32)
    assert img.shape == (2, 2, 3) and img.dtype == torch.uint8
    assert torch.equal(img[0, 1], img[1, 0]) and not torch.equal(img[0, 0], img[0, 1])
