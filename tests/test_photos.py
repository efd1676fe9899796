"""Photos at their own resolution: any-size encode/decode, the code grid's cells and pixels,
tiles that equal the whole image, the border padding, the photo loader and its size cap."""

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import vqvae
from vqvae import grid
from vqvae.images import ColourImageError, is_colour, load_photo

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture
def tiny_rgb():
    """A tiny colour model (the cifar10 preset shrunk): 4x downsample, two residual layers."""
    c = vqvae.preset(
        "cifar10", hidden_channels=16, res_channels=8, embedding_dim=8, codebook_size=32
    )
    return vqvae.VQVAE(c).eval()


@pytest.fixture(scope="module")
def cifar10():
    return vqvae.VQVAE.from_pretrained("cifar10").eval()


def photo(name="coffee", rows=slice(None), cols=slice(None)) -> torch.Tensor:
    a = getattr(skimage_data, name)()[rows, cols]
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize("size", [(29, 31), (1, 50), (50, 1), (1, 1), (3, 8), (28, 28)])
def test_any_size_encodes_to_the_ceil_grid_and_decodes_to_its_own_size(tiny_config, size):
    model = vqvae.VQVAE(tiny_config).eval()
    x = torch.rand(2, 1, *size)
    codes = model.encode_image(x)
    assert codes.shape == (2, -(-size[0] // 4), -(-size[1] // 4)) and codes.dtype == torch.int64
    y = model.decode_codes(codes, size)
    assert y.shape == x.shape and 0 <= float(y.min()) <= float(y.max()) <= 1
    assert y.is_contiguous()
    full = model.decode_codes(codes)  # the whole grid, padding included
    assert full.shape[-2:] == (codes.shape[1] * 4, codes.shape[2] * 4)
    assert torch.equal(full[..., : size[0], : size[1]], y)


def test_grid_sizes_agree_with_the_strict_methods_and_bad_sizes_are_refused(tiny_config):
    model = vqvae.VQVAE(tiny_config).eval()
    x = torch.rand(2, 1, 28, 36)
    codes = model.encode(x)
    assert torch.equal(model.encode_image(x), codes)
    torch.testing.assert_close(model.decode_codes(codes), model.decode(codes), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="encode_image takes any size"):
        model.encode(torch.rand(1, 1, 29, 28))  # the strict methods stay strict
    with pytest.raises(ValueError, match=r"a 40x36 image has a \(10, 9\) code grid, not the 7x9"):
        model.decode_codes(codes, (40, 36))
    with pytest.raises(ValueError, match="must be positive, got 0x5"):
        model.encode_image(torch.rand(1, 1, 0, 5))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        model.encode_image(torch.full((1, 1, 5, 5), 2.0))
    with pytest.raises(ValueError, match="tile must be a positive number of pixels"):
        model.encode_image(torch.rand(1, 1, 5, 5), tile=0)


def test_cells_and_pixels_map_both_ways_and_cover_the_image_once():
    H, W, d = 10, 13, 4
    seen = torch.zeros(H, W, dtype=torch.int64)
    h, w = grid.grid_shape((H, W), d)
    assert (h, w) == (3, 4)
    for i in range(h):
        for j in range(w):
            top, left, bottom, right = grid.cell_box((i, j), d, (H, W))
            seen[top:bottom, left:right] += 1
            for y in range(top, bottom):
                for x in range(left, right):
                    assert grid.pixel_cell((y, x), d, (H, W)) == (i, j)
    assert bool((seen == 1).all())  # the boxes tile the image exactly
    assert grid.cell_box((2, 3), d, (H, W)) == (8, 12, 10, 13)  # the corner cell, clipped
    assert grid.pixel_cell((9.7, 0.2), d, (H, W)) == (2, 0)  # a click's fractional position
    with pytest.raises(ValueError, match="outside the 3x4 code grid"):
        grid.cell_box((3, 0), d, (H, W))
    with pytest.raises(ValueError, match="outside the 10x13 image"):
        grid.pixel_cell((0, 13), d, (H, W))
    with pytest.raises(ValueError, match="outside"):
        grid.pixel_cell((float("nan"), 0), d, (H, W))


def test_tiles_give_the_whole_image_result(tiny_rgb, monkeypatch):
    x = photo("coffee", slice(100, 197), slice(200, 341))  # 97 x 141: padded, many tiles
    codes, z = tiny_rgb.encode_image(x, return_latents=True)
    tiled, tz = tiny_rgb.encode_image(x, tile=32, return_latents=True)
    assert torch.equal(tiled, codes)
    torch.testing.assert_close(tz, z, atol=1e-5, rtol=0)
    y = tiny_rgb.decode_codes(codes, x.shape[-2:])
    yt = tiny_rgb.decode_codes(codes, x.shape[-2:], tile=32)
    torch.testing.assert_close(yt, y, atol=1e-5, rtol=0)
    # the halo is what makes them equal: without it the tiles' edges differ
    monkeypatch.setattr(grid, "reach", lambda net: 0.0)
    assert (tiny_rgb.decode_codes(codes, x.shape[-2:], tile=32) - y).abs().max() > 1e-3
    _, z0 = tiny_rgb.encode_image(x, tile=32, return_latents=True)
    assert (z0 - z).abs().max() > 1e-3


@pytest.mark.slow
def test_tiles_give_the_whole_image_result_on_the_shipped_model(cifar10):
    x = photo("chelsea")  # 300 x 451
    codes = cifar10.encode_image(x)
    assert torch.equal(cifar10.encode_image(x, tile=128), codes)
    y = cifar10.decode_codes(codes, x.shape[-2:])
    torch.testing.assert_close(
        cifar10.decode_codes(codes, x.shape[-2:], tile=128), y, atol=1e-5, rtol=0
    )


def band_psnr(x, y, band=4):
    """PSNR (dB) of the bottom and right ``band`` pixels, and of the interior."""
    err = (x - y).pow(2).mean(1)[0]
    edge = torch.zeros_like(err, dtype=torch.bool)
    edge[-band:, :] = edge[:, -band:] = True
    inner = torch.zeros_like(edge)
    inner[band:-band, band:-band] = True
    return [float(10 * torch.log10(1 / err[m].mean())) for m in (edge, inner)]


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "rocket"])
def test_padding_to_the_grid_adds_no_border_loss(cifar10, name):
    # 125 x 125: 3 rows and columns of padding, the most a 4x grid needs
    x = photo(name, slice(60, 185), slice(60, 185))
    edge, inner = band_psnr(x, cifar10.decode_codes(cifar10.encode_image(x), (125, 125)))
    # the same crop one pixel smaller needs no padding: the model's own border quality
    x0 = x[..., :124, :124]
    edge0, _ = band_psnr(x0, cifar10.decode_codes(cifar10.encode_image(x0)))
    assert edge > edge0 - 0.5 and edge > inner - 3.0
    # zero (black) padding, what a plain F.pad gives, darkens and rings that band
    z = cifar10.decode(cifar10.encode(F.pad(x, (0, 3, 0, 3))))[..., :125, :125]
    assert band_psnr(x, z)[0] < edge - 2.0


def test_load_photo_keeps_its_size_and_downscales_above_the_cap_without_cropping():
    a = skimage_data.chelsea()  # 300 x 451
    x, notes = load_photo(a)
    assert x.shape == (1, 3, 300, 451) and notes == []
    assert torch.equal((x[0].permute(1, 2, 0) * 255).round().byte(), torch.from_numpy(a))
    x, notes = load_photo(a, max_pixels=20_000)
    h, w = x.shape[-2:]
    assert h * w <= 20_000 and h * w > 19_000 and abs(w / h - 451 / 300) < 0.02
    assert "downscaled from 451x300" in notes[0]
    # never cropped: the corners of the downscaled photo are the corners of the photo
    small = np.asarray(PIL.Image.fromarray(a).resize((w, h), PIL.Image.BOX), np.float32)
    got = x[0].permute(1, 2, 0).numpy() * 255
    for r, c in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert np.abs(got[r, c] - small[r, c]).max() < 40
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        load_photo(a, max_pixels=0)


def test_a_colour_photo_for_a_greyscale_model_is_refused_and_a_grey_one_kept(tmp_path):
    with pytest.raises(ColourImageError, match="use a colour model"):
        load_photo(skimage_data.astronaut(), channels=1)
    grey = skimage_data.camera()
    path = tmp_path / "camera.jpg"
    PIL.Image.fromarray(grey).convert("RGB").save(path, quality=80)  # grey, stored as RGB
    assert not is_colour(PIL.Image.open(path).convert("RGB"))
    assert is_colour(PIL.Image.fromarray(skimage_data.coffee()))
    x, _ = load_photo(path, channels=1)
    assert x.shape == (1, 1, 512, 512)
    assert abs(float(x.mean()) - grey.mean() / 255) < 0.01  # as it is: not inverted


def test_the_photo_suite_loads():
    from benchmarks.photos import SUITE, suite_photo

    for name in SUITE:
        a = suite_photo(name)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 256
        x, _ = load_photo(a)
        assert x.shape[-2:] == a.shape[:2]  # all within the 1 MP cap
        assert is_colour(PIL.Image.fromarray(a))


@pytest.mark.slow
def test_the_photo_benchmark_reports_the_vq_vae_beside_classic_codecs(tmp_path):
    import json

    from benchmarks.photos import main

    r = main(
        ["--photos", "chelsea", "--repeat", "1", "--no-targets", "--out", str(tmp_path / "p.json")]
    )
    p = json.loads((tmp_path / "p.json").read_text())["photos"][0]
    assert p == json.loads(json.dumps(r["photos"][0]))
    assert p["size"] == [451, 300] and p["grid"] == [75, 113] and p["bytes"] == 9535
    assert 30 < p["psnr"] < 40 and p["thumbnail_psnr"] < p["psnr"]  # own size beats a thumbnail
    for fmt in ("jpeg", "webp"):
        assert abs(p[fmt]["bytes"] - 9535) < 0.1 * 9535 and p[fmt]["psnr"] > 25
