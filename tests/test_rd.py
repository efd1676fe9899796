"""Rate-distortion curves: format sweeps, the codec's operating points, per-image curves and
their means in CompressAI's layout, and benchmarks.rd's files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import vqvae
from codec_helpers import codec_pair
from vqvae import codec, compare, rd


def _photo(h: int, w: int) -> torch.Tensor:
    """A real photo's corner, (3, h, w) in [0, 1]."""
    import skimage.data

    a = skimage.data.astronaut()[:h, 100 : 100 + w]
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255


def test_a_sweep_is_each_quality_s_whole_file_and_its_decoded_image():
    x = _photo(40, 48)
    points = compare.sweep(x, "jpeg", (90, 10, 50))
    assert [p.quality for p in points] == [90, 10, 50]
    for p in points:
        assert p.data == compare.encode_classic(x, "jpeg", p.quality) and p.bits == 8 * len(p.data)
        assert p.image.shape == (40, 48, 3) and p.image.dtype == np.uint8
    assert points[1].bits < points[2].bits < points[0].bits
    with pytest.raises(ValueError, match="quality must be"):
        compare.sweep(x, "webp", (0,))


def test_the_codec_s_point_at_the_training_size_is_its_vqz_file(tiny_config, mnist_small):
    model, prior = codec_pair(tiny_config)
    x = mnist_small.test[0]
    (p,) = codec.operating_points(model, prior, x)
    data = codec.compress(model, prior, x[None], labels="auto")[0]
    assert (p.codec, p.rate, p.bits) == (codec.points.VQZ, "prior", 8 * len(data))
    assert torch.equal(p.image, model.decode(model.encode(x[None]))[0])


def test_the_codec_s_point_elsewhere_is_the_plain_codes(tiny_config, mnist_small):
    model, prior = codec_pair(tiny_config)
    x = torch.rand(1, 30, 45)  # a 8 x 12 grid of K = 32 codes
    (p,) = codec.operating_points(model, prior, x)
    assert (p.codec, p.rate, p.bits) == (codec.points.PLAIN, "K=32", 8 * 12 * 5)
    codes = model.encode_image(x[None])
    assert torch.equal(p.image, model.decode_codes(codes, (30, 45))[0])
    # no prior: plain codes at the training size too
    (q,) = codec.operating_points(model, None, mnist_small.test[0])
    assert q.codec == codec.points.PLAIN and q.bits == 7 * 7 * 5
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        codec.operating_points(model, prior, x[None])


def test_image_curves_measure_every_point_as_compressai_does(tiny_config):
    model, _ = codec_pair(tiny_config)
    x = _photo(170, 180)  # large enough for MS-SSIM
    curves = rd.image_curves(x[:1], model, None, formats=["webp"], qualities=(20, 80))
    assert set(curves) == {"WebP", codec.points.PLAIN}
    webp = curves["WebP"]
    assert webp["quality"] == [20, 80]
    e = compare.sweep(x[:1], "webp", (80,))[0]
    y = torch.from_numpy(np.array(e.image)).float()[None, None] / 255
    assert webp["bpp"][1] == e.bits / (170 * 180)
    assert webp["psnr-grey"][1] == pytest.approx(float(vqvae.psnr(y, x[None, :1])))
    assert webp["ms-ssim-grey"][1] == pytest.approx(float(vqvae.metrics.ms_ssim(y, x[None, :1])))
    plain = curves[codec.points.PLAIN]
    assert plain["bpp"] == [math.ceil(170 / 4) * 45 * 5 / (170 * 180)]
    # a thumbnail has no MS-SSIM
    small = rd.image_curves(_photo(32, 32), formats=["jpeg"], qualities=(50,))
    assert set(small["JPEG"]) == {"bpp", "psnr-rgb", "quality"}


def test_mean_curves_average_point_by_point_and_results_take_compressai_s_layout():
    a = {"JPEG": {"bpp": [1.0, 2.0], "psnr-rgb": [30.0, 34.0], "ms-ssim-rgb": [0.9, 0.99],
                  "quality": [10, 50]}}  # fmt: skip
    b = {"JPEG": {"bpp": [3.0, 4.0], "psnr-rgb": [32.0, 36.0], "quality": [10, 50]}}
    mean = rd.mean_curves([a, b])["JPEG"]
    assert mean == {"bpp": [2.0, 3.0], "psnr-rgb": [31.0, 35.0], "quality": [10, 50]}
    doc = rd.results("JPEG", "a test", rd.mean_curves([a, a])["JPEG"])
    assert doc["name"] == "JPEG" and doc["description"] == "a test"
    assert doc["results"]["ms-ssim-rgb"] == pytest.approx([0.9, 0.99])
    assert doc["results"]["ms-ssim-rgb-db"] == pytest.approx([10.0, 20.0])
    with pytest.raises(ValueError, match="differ in their points"):
        rd.mean_curves([a, {"JPEG": {"bpp": [1.0], "psnr-rgb": [30.0], "quality": [10]}}])
    with pytest.raises(ValueError, match="no curves"):
        rd.mean_curves([])


@pytest.mark.slow
def test_the_benchmark_writes_compressai_results_a_table_and_a_plot(tmp_path, capsys):
    """benchmarks.rd --limit 2 on two photos and two CIFAR-10 images (a folder of JPEGs
    laid out as the project's copy), with the shipped cifar10 model and prior."""
    from benchmarks import rd as bench

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        folder = tmp_path / "data" / "cifar10-jpeg" / split / "cat"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                folder / f"{i}.jpg", quality=75
            )
    out = tmp_path / "rd"
    data = ["--data-dir", str(tmp_path / "data"), "--out", str(out)]
    cifar = bench.main(["--datasets", "cifar10", "--limit", "2", "--qualities", "10", "60", *data])
    assert set(cifar["cifar10"]) == {
        *(rd.FORMAT_NAMES[f] for f in compare.available_formats()),
        ".vqz",
    }
    table = capsys.readouterr().out
    photos = bench.main(
        ["--datasets", "photos", "--limit", "2", "--qualities", "50", "--formats", "webp", *data]
    )
    # the shipped cifar10 has a grid prior: photos get a .vqz point at each of its rates
    assert set(photos["photos"]) == {"WebP", ".vqz"}
    table += capsys.readouterr().out
    for dataset, name, n in (
        ("cifar10", "jpeg", 2),
        ("cifar10", "vqz", 1),
        ("photos", "webp", 1),
        ("photos", "vqz", 2),
    ):
        doc = json.loads((out / dataset / f"{name}.json").read_text())
        assert set(doc) == {"name", "description", "results"}
        r = doc["results"]
        assert len(r["bpp"]) == len(r["psnr-rgb"]) == n
        assert ("ms-ssim-rgb" in r) == ("ms-ssim-rgb-db" in r) == (dataset == "photos")
        assert (dataset == "photos") == ("MS-SSIM: five scales" in doc["description"])
    assert (
        "2 CIFAR-10 test images" in doc["description"] or "astronaut, chelsea" in doc["description"]
    )
    vqz = json.loads((out / "cifar10" / "vqz.json").read_text())["results"]
    assert vqz["rate"] == ["prior"] and vqz["bpp"][0] < 1.0
    photo_vqz = json.loads((out / "photos" / "vqz.json").read_text())["results"]
    assert photo_vqz["rate"] == ["1 stage, 1/2 size", "1 stage"]
    assert photo_vqz["bpp"][0] < photo_vqz["bpp"][1] < 0.5625  # under the plain codes' bits
    assert "| .vqz | PSNR |" in table and "| .vqz | MS-SSIM (dB) |" in table
    # the plot draws every dataset in the folder, this run's and the one before
    assert set(bench.saved_curves(out)) == {"cifar10", "photos"}
    assert "| WebP | PSNR | BD-rate " in table  # the formats against each other
    (out / "rd.png").unlink()
    assert set(bench.main(["--replot", "--out", str(out)])) == {"cifar10", "photos"}
    assert "#### photos" in capsys.readouterr().out
    assert Image.open(out / "rd.png").size[0] > 600


def test_the_benchmark_on_a_folder_of_photos_with_rdo_codes(tmp_path, capsys):
    """--datasets folder --photos-dir DIR --rdo L: the photos of DIR, the .vqz curve named
    for its weight and described so; without --photos-dir the folder is a clear skip."""
    from benchmarks import rd as bench

    photos = tmp_path / "held-out"
    photos.mkdir()
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((96, 72)).save(photos / "a.png")
    out = tmp_path / "rd"
    args = ["--datasets", "folder", "--photos-dir", str(photos), "--qualities", "50",
            "--formats", "jpeg", "--out", str(out)]  # fmt: skip
    curves = bench.main([*args, "--rdo", "0.0001"])["folder"]
    assert set(curves) == {"JPEG", ".vqz rdo=0.0001"}
    doc = json.loads((out / "folder" / "vqz-rdo-0-0001.json").read_text())
    assert "codes chosen for error + 0.0001 x bits" in doc["description"]
    assert "photos in" in doc["description"] and "a.png" in doc["description"]
    plain = bench.main(args)["folder"][".vqz"]
    assert sum(curves[".vqz rdo=0.0001"]["bpp"]) <= sum(plain["bpp"])
    with pytest.raises(SystemExit):
        bench.main(["--datasets", "folder", "--out", str(out)])
    assert "needs --photos-dir" in capsys.readouterr().err


def test_the_chart_draws_each_curve_that_has_the_metric_ms_ssim_in_db():
    from vqvae.viz import rd_figure

    curves = {
        "JPEG": {"bpp": [1.0, 2.0], "psnr-rgb": [30.0, 34.0], "quality": [10, 50]},
        ".vqz": {
            "bpp": [0.2, 0.4],
            "psnr-rgb": [28.0, 31.0],
            "ms-ssim-rgb": [0.9, 0.99],
            "rate": ["low", "high"],
        },  # fmt: skip
    }
    fig = rd_figure(curves, "ms-ssim-rgb", title="t")
    (vqz,) = fig.data  # JPEG has no MS-SSIM here
    assert vqz.name == ".vqz" and list(vqz.y) == pytest.approx([10.0, 20.0])
    assert vqz.mode == "lines+markers" and list(vqz.customdata) == ["low", "high"]
    assert fig.layout.yaxis.title.text == "MS-SSIM (dB)" and fig.layout.xaxis.type == "log"
    jpeg, _ = rd_figure(curves).data
    assert list(jpeg.customdata) == ["quality 10", "quality 50"] and list(jpeg.y) == [30.0, 34.0]
