"""The codec's command line: python -m vqvae.codec compress|decompress, its errors, and
files decoded with the shipped model their header names."""

import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from codec_helpers import as_version_2, codec_pair, make_prior
from vqvae.codec import compress_codes, decompress_codes, main, prior_fingerprint, read_header
from vqvae.codec import format as vqz
from vqvae.images import load_image, to_model_input, to_uint8


@pytest.fixture
def tiny_pair(tiny_config):
    """A tiny VQ-VAE (28x28 -> 7x7 codes, K = 32) and a random prior tied to it."""
    return codec_pair(tiny_config)


def save_pair(folder, model, prior):
    """``model`` and ``prior`` saved into one folder, as the CLI finds a model; -> folder."""
    model.save_pretrained(folder)
    prior.save_pretrained(folder)
    return folder


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
    folder = save_pair(tmp_path / "pretrained" / "tiny", model, prior)
    pngs = write_pngs(tmp_path / "in", mnist_small.test[:3])
    main(["compress", *pngs, "--model", str(folder), "--label", "7", "-o", str(tmp_path / "z")])
    out = capsys.readouterr().out
    assert "digit0.png" in out and "header" in out and "prior NLL" in out
    vqz = sorted((tmp_path / "z").glob("*.vqz"))
    assert [p.name for p in vqz] == ["digit0.vqz", "digit1.vqz", "digit2.vqz"]
    main(["compress", *pngs, "--model", str(folder), "--label", "7", "--one-pass", "-o",
          str(tmp_path / "z1")])  # fmt: skip
    one_pass = sorted((tmp_path / "z1").glob("*.vqz"))
    assert {read_header(p.read_bytes()).version for p in one_pass} == {5}
    # decompress finds the model the files name in ./pretrained/
    monkeypatch.chdir(tmp_path)
    for files, back in ((vqz, "back"), (one_pass, "back1")):
        main(["decompress", *map(str, files), "-o", str(tmp_path / back)])
        assert "(class 7)" in capsys.readouterr().out
        for png in pngs:
            x, _ = to_model_input(load_image(png)[0], 1, 28)
            expected = to_uint8(model.decode(model.encode(x))[0])
            name = tmp_path / back / png.rsplit("/", 1)[1]
            assert np.array_equal(np.asarray(PIL.Image.open(name)), expected)


def test_cli_errors_are_clear(tiny_pair, tmp_path, capsys):
    model, prior = tiny_pair
    folder = save_pair(tmp_path / "m", model, prior)
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


def test_shipped_decoding_tells_colliding_ids_apart_by_the_checksum(
    tiny_pair, tmp_path, monkeypatch, capsys
):
    """Format 2's 4-bit ids can name two shipped (model, prior) pairs: decompress without
    --model tries every pair the header names, and the checksum tells which made the file."""
    model, _ = tiny_pair
    priors, want = [], None
    for seed in range(200):  # three priors with the same 4-bit id (1 in 16 each)
        names = [f"{'abc'[len(priors)]}{i}" for i in range(10)]  # the class names tell
        p = make_prior(num_classes=10, model=model, seed=seed, std=0.3, class_names=names)
        pid = vqz.short_id(prior_fingerprint(p), 4)
        want = pid if want is None else want
        if pid == want:
            priors.append(p)
        if len(priors) == 3:
            break
    first, second, _ = priors
    for name, p in (("a", first), ("b", second)):  # a third is shipped with no one
        model.save_pretrained(tmp_path / "pretrained" / name)
        p.save_pretrained(tmp_path / "pretrained" / name)
    codes = second.sample(1, labels=7, generator=torch.Generator().manual_seed(0))
    files = {n: as_version_2(compress_codes(p, codes, 7, model=model)[0], p, codes[0], 7)
             for n, p in zip("abc", priors, strict=True)}  # fmt: skip
    infos = [read_header(f) for f in files.values()]
    assert len({(i.vqvae_id, i.prior_id) for i in infos}) == 1  # one id for all three
    with pytest.raises(ValueError, match="corrupted or truncated"):  # "a" cannot decode "b"
        decompress_codes(first, files["b"], model=model)
    for n, f in files.items():
        (tmp_path / f"{n}.vqz").write_bytes(f)
    monkeypatch.chdir(tmp_path)
    # "b"'s file is tried with "a" first (sorted), refused by its checksum, then decoded by "b"
    main(["decompress", "a.vqz", "b.vqz", "-o", "out"])
    out = capsys.readouterr().out
    assert "a.vqz -> out/a.png (class a7)" in out and "b.vqz -> out/b.png (class b7)" in out
    expected = to_uint8(model.decode(codes)[0])
    for n in "ab":
        assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "out" / f"{n}.png")), expected)
    # a file that both name but neither made: the last candidate's refusal
    with pytest.raises(SystemExit) as e:
        main(["decompress", "c.vqz", "-o", "out"])
    assert e.value.code == 2
    assert re.search(r"c\.vqz: corrupted or truncated .vqz file", capsys.readouterr().err)


def _cli_error(capsys, argv) -> str:
    """Run the CLI, expecting argparse's way of failing: exit status 2 and one error line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_cli_refuses_what_is_no_file_of_its_kind_without_reading_it(tiny_pair, tmp_path, capsys):
    folder = save_pair(tmp_path / "m", *tiny_pair)
    big = tmp_path / "big.vqz"
    with open(big, "wb") as f:  # 1.5 GB, sparse: reading it whole would cost 1.5 GB
        f.truncate(1500 << 20)
    fixed = ["--model", str(folder), "-o", str(tmp_path / "o")]
    assert "big.vqz: over 16 MB: not a .vqz file" in _cli_error(
        capsys, ["decompress", str(big), *fixed]
    )
    assert "not a .vqz file" in _cli_error(capsys, ["decompress", "/dev/zero", *fixed])
    assert "Is a directory" in _cli_error(capsys, ["decompress", str(tmp_path), *fixed])
    err = _cli_error(capsys, ["compress", str(tmp_path), "--model", str(folder), "-o", "x"])
    assert "is a folder" in err
    err = _cli_error(capsys, ["compress", "/dev/zero", "--model", str(folder), "-o", "x"])
    assert "not a regular file" in err
    # -o naming a file that exists
    png = write_pngs(tmp_path / "in", torch.rand(1, 1, 28, 28))[0]
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    err = _cli_error(capsys, ["compress", png, "--model", str(folder), "-o", str(taken)])
    assert "taken" in err and taken.read_text() == "keep me"


def test_a_file_decoded_with_the_wrong_shipped_model_names_the_right_one(
    tiny_pair, tmp_path, monkeypatch, capsys
):
    model, prior = tiny_pair
    other = make_prior(model=model, seed=7, std=0.3)
    for name, p in (("right", prior), ("wrong", other)):
        save_pair(tmp_path / "pretrained" / name, model, p)
    (tmp_path / "f.vqz").write_bytes(compress_codes(prior, prior.sample(1), model=model)[0])
    monkeypatch.chdir(tmp_path)
    err = _cli_error(capsys, ["decompress", "f.vqz", "--model", "pretrained/wrong", "-o", "o"])
    assert "made with another prior" in err and "pass --model right" in err
