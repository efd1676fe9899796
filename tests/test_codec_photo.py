"""Format 3: images of any size at every rate, coded under a grid prior."""

import numpy as np
import pytest
import torch
from test_grid_prior import small_prior

from vqvae import VQVAE, VQVAEConfig
from vqvae.codec import Rate, compress_image, decompress_image, rates, read_photo_header
from vqvae.codec.photo import decompress_codes_v3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = VQVAEConfig(hidden_channels=16, res_channels=8, embedding_dim=8, codebook_size=16,
                      num_stages=2, image_size=8)  # fmt: skip
    return VQVAE(cfg).eval()


@pytest.fixture(scope="module")
def prior(model):
    p = small_prior(K=16, S=2)
    p.config.vqvae_fingerprint = ""  # not tied: any two-stage, 16-code model
    return p


def photo(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, max(1, h // 4), max(1, w // 4),
                                                        generator=g), size=(h, w))  # fmt: skip
    return smooth[0]


def test_rates_of_a_model(model):
    assert rates(model) == [Rate(1, 2), Rate(1), Rate(2)]
    assert [r.name for r in rates(model)] == ["1 stage, 1/2 size", "1 stage", "2 stages"]


@pytest.mark.parametrize("h,w", [(37, 45), (1, 40), (5, 3), (16, 16)])
def test_every_rate_round_trips_exactly(model, prior, h, w):
    x = photo(h, w)
    for i, r in enumerate(rates(model)):
        f = compress_image(model, prior, x, rate=i)
        hd = read_photo_header(f)
        assert (hd.height, hd.width, hd.rate) == (h, w, r)
        y = decompress_image(model, prior, f)
        assert y.shape == (1, 3, h, w)
        # the codes come back bit for bit: what decode_codes gives for the kept stages
        codes, _ = decompress_codes_v3(model, prior, f)
        # (the rate's shrink, checked against torch's own bicubic resize below)
        assert torch.equal(codes, model.encode_image(r.shrink(x[None]), stages=r.stages))
        if r.downscale == 1:
            assert torch.equal(y, model.decode_codes(codes, (h, w)))


def test_a_rate_shrinks_as_it_says():
    x = photo(37, 45)[None]
    assert Rate(1, 2).coded_size((37, 45)) == (19, 23) and Rate(1).coded_size((37, 45)) == (37, 45)
    assert torch.equal(Rate(1).shrink(x), x)
    expected = torch.nn.functional.interpolate(x, size=(19, 23), mode="bicubic", antialias=True)
    assert torch.equal(Rate(1, 2).shrink(x), expected.clamp(0, 1))


def test_more_stages_cost_more_bytes(model, prior):
    x = photo(32, 48)
    sizes = [len(compress_image(model, prior, x, rate=i)) for i in range(3)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_damaged_and_foreign_files_are_refused(model, prior):
    f = compress_image(model, prior, photo(20, 24))
    good = decompress_image(model, prior, f)
    bad = bytearray(f)
    bad[len(f) // 2] ^= 0x5A
    with pytest.raises(ValueError, match="corrupted|truncated"):
        decompress_image(model, prior, bytes(bad))
    # any byte damaged anywhere: refused, or (in the slack of the coder's last word, which the
    # payload keeps: no shortest cut) the very same codes, checked by the checksum
    refused = 0
    for i in range(len(f)):
        bad = bytearray(f)
        bad[i] ^= 0x5A
        try:
            again = decompress_image(model, prior, bytes(bad))
        except ValueError:
            refused += 1
            continue
        assert i >= len(f) - 4 and torch.equal(again, good), f"byte {i}: decoded to another image"
    assert refused >= len(f) - 4
    with pytest.raises(ValueError, match="truncated|corrupted"):
        decompress_image(model, prior, f[:6])
    other = small_prior(K=16, S=2, seed=3)
    with pytest.raises(ValueError, match="another prior"):
        decompress_image(model, other, f)
    with pytest.raises(ValueError, match="not a version 3"):
        decompress_image(model, prior, b"\xa2" + f[1:])


def test_bad_arguments(model, prior):
    with pytest.raises(ValueError, match="rate index"):
        compress_image(model, prior, photo(8, 8), rate=7)
    with pytest.raises(ValueError, match="stage"):
        compress_image(model, prior, photo(8, 8), rate=Rate(3))
    with pytest.raises(ValueError, match="one image"):
        compress_image(model, prior, torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="GridPrior"):
        compress_image(model, object(), photo(8, 8))


def test_cli_codes_photos_at_their_size(model, prior, tmp_path, monkeypatch, capsys):
    """compress --rate writes format 3; decompress finds the shipped-style folder its ids
    name and writes a PNG of the photo's size."""
    import numpy as np
    import PIL.Image

    from vqvae.codec import main
    from vqvae.images import to_uint8

    folder = tmp_path / "pretrained" / "tiny-photo"
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    src = tmp_path / "photo.png"
    PIL.Image.fromarray(to_uint8(photo(30, 41))).save(src)
    main(["compress", str(src), "--model", str(folder), "--rate", "2", "-o", str(tmp_path / "z")])
    assert "41x30, 2 stages" in capsys.readouterr().out
    f = (tmp_path / "z" / "photo.vqz").read_bytes()
    assert read_photo_header(f).rate == Rate(2)
    monkeypatch.chdir(tmp_path)
    main(["decompress", str(tmp_path / "z" / "photo.vqz"), "-o", str(tmp_path / "back")])
    back = np.asarray(PIL.Image.open(tmp_path / "back" / "photo.png"))
    expected = to_uint8(decompress_image(model, prior, f)[0])
    assert back.shape == (30, 41, 3) and np.array_equal(back, expected)
    with pytest.raises(SystemExit) as e:
        main(["compress", str(src), "--model", str(folder), "--rate", "9", "-o", str(tmp_path)])
    assert e.value.code == 2 and "0: 1 stage, 1/2 size" in capsys.readouterr().err


def test_rate_distortion_optimised_codes(model, prior, tmp_path, capsys):
    """rdo: weight 0 gives the nearest codes; a larger weight never a larger file here, more
    latent error, and files that decode to exactly the codes chosen; the CLI takes --rdo
    with --rate only; bad weights are refused."""
    from vqvae.codec.points import operating_points, vqz_name
    from vqvae.codec.rdo import rd_codes

    x = photo(40, 56, seed=3)[None]
    with torch.no_grad():
        codes, z_e = model.encode_image(x, stages=2, return_latents=True)
    assert torch.equal(rd_codes(model, prior, z_e, 2, 0.0), codes)
    sizes, errors = [], []
    for lam in (0.0, 0.05, 0.5, 5.0):
        f, y = compress_image(model, prior, x, rate=2, rdo=lam, decoded=True)
        chosen = rd_codes(model, prior, z_e, 2, lam)
        back, _ = decompress_codes_v3(model, prior, f)
        assert torch.equal(back, chosen)
        assert torch.equal(decompress_image(model, prior, f), y)
        sizes.append(len(f))
        with torch.no_grad():
            errors.append(float((model.lookup_stages(chosen) - z_e).pow(2).mean()))
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert errors == sorted(errors) and errors[-1] > errors[0]
    # what rd_codes hands the coder as it goes: every (stage, pass) in coding order, with the
    # codes chosen and the very counts the prior gives for the finished grid
    from vqvae.grid_prior import pass_map, schedule

    handed = []
    chosen = rd_codes(model, prior, z_e, 2, 0.5, on_pass=lambda *a: handed.append(a))
    assert [(s, p) for s, p, _, _ in handed] == schedule(2)
    for (s, p, symbols, table), want in zip(handed, prior.counts(chosen, schedule(2)), strict=True):
        cells = (pass_map(*chosen.shape[-2:], s) == p).flatten()
        assert np.array_equal(symbols, chosen[0, s].flatten()[cells].numpy())
        assert np.array_equal(table, want)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=">= 0"):
            compress_image(model, prior, x, rate=2, rdo=bad)
    # the benchmarks' curve of such files is named for its weight
    points = operating_points(model, None, x[0], prior, rdo=0.5)
    assert {p.codec for p in points} == {vqz_name(0.5)} == {".vqz rdo=0.5"}
    assert vqz_name(0.0) == ".vqz"
    # the CLI
    import PIL.Image

    from vqvae.codec import main
    from vqvae.images import to_uint8

    folder = tmp_path / "pretrained" / "tiny-photo"
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    src = tmp_path / "photo.png"
    PIL.Image.fromarray(to_uint8(x[0])).save(src)
    for lam, out in (("0", "plain"), ("5", "rdo")):
        main(["compress", str(src), "--model", str(folder), "--rate", "2", "--rdo", lam,
              "-o", str(tmp_path / out)])  # fmt: skip
    plain, rdo = ((tmp_path / d / "photo.vqz").stat().st_size for d in ("plain", "rdo"))
    assert rdo < plain
    with pytest.raises(SystemExit) as e:
        main(["compress", str(src), "--model", str(folder), "--rdo", "1", "-o", str(tmp_path)])
    assert e.value.code == 2 and "--rdo chooses a photo's codes" in capsys.readouterr().err


def test_refined_latents_decode_closer_for_the_same_decoder(model, prior, tmp_path, capsys):
    """refine: 0 steps keeps the encoder's codes; more steps decode closer to the photo, in
    one tile or in many (halos), under inference_mode too, without touching the model; the
    files hold the refined latents' codes and decode exactly to the images compress_image
    reports, whatever its tile; bad step counts refused; the CLI takes --refine with --rate
    only."""
    from vqvae.codec.points import operating_points, vqz_name
    from vqvae.codec.refine import refine_latents

    x = photo(40, 56, seed=4)[None]
    with torch.no_grad():
        codes, z_e = model.encode_image(x, stages=2, return_latents=True)
    assert torch.equal(refine_latents(model, x, z_e, 2, 0), z_e)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def error(c):
        return float((model.decode_codes(c, (40, 56)) - x).pow(2).mean())

    for tile in (None, 16):  # 16 px: tiles of 4 x 4 cells, each with its halo
        errors = []
        for steps in (10, 40):
            with torch.inference_mode():  # as the benchmarks call it
                z = refine_latents(model, x, z_e, 2, steps, tile=tile)
            errors.append(error(model.quantize_stages(z, 2)[1]))
        assert error(codes) > errors[0] > errors[1], (tile, errors)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # the file: the codes of the refined latents; the same file when encoded in tiles
    f, y = compress_image(model, prior, x, rate=2, refine=10, decoded=True)
    refined = model.quantize_stages(refine_latents(model, x, z_e, 2, 10), 2)[1]
    assert torch.equal(decompress_codes_v3(model, prior, f)[0], refined)
    assert torch.equal(decompress_image(model, prior, f), y)
    assert compress_image(model, prior, x, rate=2, refine=10, tile=16) == f
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="refinement steps"):
            compress_image(model, prior, x, rate=2, refine=bad)
    with pytest.raises(ValueError, match="do not fit"):
        refine_latents(model, x[..., :20, :], z_e, 2, 1)
    points = operating_points(model, None, x[0], prior, rdo=0.5, refine=2)
    assert {p.codec for p in points} == {vqz_name(0.5, 2)} == {".vqz rdo=0.5 refine=2"}
    # the CLI
    import PIL.Image

    from vqvae.codec import main
    from vqvae.images import to_uint8

    folder = tmp_path / "pretrained" / "tiny-photo"
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    src = tmp_path / "photo.png"
    PIL.Image.fromarray(to_uint8(x[0])).save(src)
    main(["compress", str(src), "--model", str(folder), "--rate", "2", "--refine", "5",
          "-o", str(tmp_path / "out")])  # fmt: skip
    assert "photo.vqz" in capsys.readouterr().out and (tmp_path / "out" / "photo.vqz").exists()
    refusals = ((["--refine", "3"], "use it with --rate"),
                (["--rate", "2", "--refine", "-1"], "--refine must be >= 0"))  # fmt: skip
    for args, message in refusals:
        with pytest.raises(SystemExit) as e:
            main(["compress", str(src), "--model", str(folder), *args, "-o", str(tmp_path)])
        assert e.value.code == 2 and message in capsys.readouterr().err
