"""The codec's command line: python -m vqvae.codec compress|decompress, its errors, and
files decoded with the shipped model their header names."""

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from codec_helpers import codec_pair, make_prior
from vqvae.codec import compress_codes, main
from vqvae.images import load_image, to_model_input, to_uint8


@pytest.fixture
def tiny_pair(tiny_config):
    """A tiny VQ-VAE (28x28 -> 7x7 codes, K = 32) and a random prior tied to it."""
    return codec_pair(tiny_config)


def write_pngs(folder, images):
    folder.mkdir()
    paths = []
    for i, x in enumerate(images):
        p = folder / f"digit{i}.png"
        PIL.Image.fromarray(to_uint8(x)).save(p)
        paths.append(str(p))
    return paths


def test_cli_round_trip(tiny_pair, mnist_small, tmp_path, monkeypatch, capsys):
    model, _ = tiny_pair
    prior = make_prior(num_classes=10, model=model, std=0.3)
    folder = tmp_path / "pretrained" / "tiny"
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    pngs = write_pngs(tmp_path / "in", mnist_small.test[:3])
    main(["compress", *pngs, "--model", str(folder), "--label", "7", "-o", str(tmp_path / "z")])
    out = capsys.readouterr().out
    assert "digit0.png" in out and "header" in out and "prior NLL" in out
    vqz = sorted((tmp_path / "z").glob("*.vqz"))
    assert [p.name for p in vqz] == ["digit0.vqz", "digit1.vqz", "digit2.vqz"]
    # decompress finds the model the files name in ./pretrained/
    monkeypatch.chdir(tmp_path)
    main(["decompress", *map(str, vqz), "-o", str(tmp_path / "back")])
    assert "(class 7)" in capsys.readouterr().out
    for png in pngs:
        x, _ = to_model_input(load_image(png)[0], 1, 28)
        expected = to_uint8(model.decode(model.encode(x))[0])
        name = tmp_path / "back" / png.rsplit("/", 1)[1]
        assert np.array_equal(np.asarray(PIL.Image.open(name)), expected)


def test_cli_errors_are_clear(tiny_pair, tmp_path, capsys):
    model, prior = tiny_pair
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    bad = tmp_path / "bad.vqz"
    bad.write_bytes(b"\xa9rest")
    with pytest.raises(SystemExit) as e:
        main(["decompress", str(bad), "--model", str(folder), "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "bad.vqz: .vqz format version 9 is newer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", str(tmp_path / "none.png"), "--model", str(folder), "-o", "x"])
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no shipped model has this file's fingerprints
        f = compress_codes(prior, prior.sample(1), model=model)[0]
        (tmp_path / "a.vqz").write_bytes(f)
        main(["decompress", str(tmp_path / "a.vqz"), "-o", str(tmp_path / "o")])
    assert "pass --model" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_runs_as_a_module(tmp_path):
    bad = tmp_path / "x.vqz"
    bad.write_bytes(b"not a vqz file")
    r = subprocess.run(
        [sys.executable, "-m", "vqvae.codec", "decompress", str(bad), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "not a .vqz file" in r.stderr
