"""python -m train.grid_prior end to end on a tiny two-stage VQ-VAE and a folder of images:
its codes, evaluations, resume, and a frozen prior the photo codec codes with."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from train import grid_prior as tgp
from vqvae import VQVAE, GridPrior, VQVAEConfig
from vqvae.codec import compress_image, decompress_image


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden_channels=16, res_channels=8, embedding_dim=8,
                              codebook_size=16, num_stages=2, image_size=16))  # fmt: skip
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        d = tmp_path / "images" / split / "things"
        d.mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            PIL.Image.fromarray(pixels).resize((16, 16)).save(d / f"{i}.png")
    return model, tmp_path


def args(tmp_path, *extra):
    return ["--vqvae", str(tmp_path / "model"), "--dataset", "folder",
            "--data-dir", str(tmp_path / "images"), "--out", str(tmp_path / "run"),
            "--width", "8", "--embed-dim", "2", "--layers", "1", "--batch-size", "8",
            "--per-scale", "8", "--eval-images", "8", "--log-every", "2", "--eval-every", "4",
            "--ckpt-every", "2", *extra]  # fmt: skip


def test_train_resume_and_code_with_the_result(setup, capsys):
    model, tmp = setup
    tgp.main(args(tmp, "--steps", "4"))
    out = capsys.readouterr().out
    assert "bits per code by stage, test" in out and "photos" in out
    records = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").open()]
    final = [r for r in records if r.get("final")][0]["eval"]
    assert len(final["test_bits_per_code"]) == 2 and len(final["photo_bits_per_code"]) == 2
    # a resume that extends the run goes on from its checkpoint
    tgp.main(["--out", str(tmp / "run"), "--resume", "--steps", "6"])
    steps = [r["step"] for r in map(json.loads, (tmp / "run" / "metrics.jsonl").open())]
    assert max(steps) == 6
    prior = GridPrior.from_pretrained(tmp / "run")
    assert bool(prior.frozen) and prior.config.num_stages == 2
    x = torch.rand(3, 19, 23)
    back = decompress_image(model.eval(), prior, compress_image(model, prior, x))
    assert back.shape == (1, 3, 19, 23)


def test_init_from_a_trained_prior_starts_from_its_network(setup, tmp_path, capsys):
    """--init-from: the run starts from the trained prior's network (at a vanishing learning
    rate it ends where it started); a prior of another network is refused, the field named."""
    model, tmp = setup
    tgp.main(args(tmp, "--steps", "8", "--lr", "1e-2"))
    trained = GridPrior.from_pretrained(tmp / "run")
    fine = tmp / "fine"
    tgp.main([*args(tmp, "--steps", "4", "--lr", "1e-9", "--init-from", str(tmp / "run")),
              "--out", str(fine)])  # fmt: skip
    tuned = GridPrior.from_pretrained(fine)
    for name, p in tuned.named_parameters():
        torch.testing.assert_close(p, dict(trained.named_parameters())[name], atol=1e-6, rtol=0)
    with pytest.raises(SystemExit) as e:
        tgp.main([*args(tmp, "--steps", "2", "--width", "4", "--init-from", str(tmp / "run")),
                  "--out", str(tmp / "other")])  # fmt: skip
    assert e.value.code == 2
    assert "channels 8 vs 4" in capsys.readouterr().err


def test_photo_crops_of_any_size_train_a_prior(setup, tmp_path, capsys, monkeypatch):
    """--dataset photos --image-size 32: grids of 8 x 8 photo codes (the tiny model's
    cells are 4 px), no upscaling; --image-size on CIFAR-10 is refused."""
    from vqvae import crops

    model, tmp = setup
    monkeypatch.setenv("VQVAE_CACHE", str(tmp / "cache"))
    monkeypatch.setitem(crops.CROPS_AT_32, "train", 32)
    monkeypatch.setitem(crops.CROPS_AT_32, "test", 32)
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        (tmp / "photos" / split).mkdir(parents=True)
        pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).resize((300, 200)).save(tmp / "photos" / split / "p.png")
    run = [*args(tmp, "--steps", "2", "--scales", "1", "--image-size", "32"), "--dataset",
           "photos", "--data-dir", str(tmp / "photos")]  # fmt: skip
    tgp.main(run)
    (codes,) = (tmp / "run").glob("codes-*-s32-x1-*.npz")
    with np.load(codes) as d:
        assert d["train_1"].shape == (32, 2, 8, 8) and d["test"].shape == (8, 2, 8, 8)
    assert GridPrior.from_pretrained(tmp / "run").frozen
    with pytest.raises(SystemExit) as e:
        tgp.main([*args(tmp, "--steps", "2", "--image-size", "64"), "--dataset", "cifar10",
                  "--out", str(tmp / "run2")])  # fmt: skip
    assert e.value.code == 2 and "--image-size is for folder and photos" in capsys.readouterr().err
