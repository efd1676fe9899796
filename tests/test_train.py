"""The training pipeline end to end on a tiny model and the small MNIST sample: the three
phases lower the loss, an interrupted run resumes exactly, export writes a loadable model
whose metrics evaluate reproduces, and bad input gives one clear message with nothing lost."""

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vqvae
from train import evaluate as train_evaluate
from train import export as train_export
from train import runs as train_runs
from train import train as train_train
from vqvae.data import DatasetNotFoundError, spread

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "mnist_small.npz"

# A model that trains in milliseconds a step; flags the tests share.
TINY = "--hidden-channels 16 --res-channels 8 --res-layers 1 --embedding-dim 8 --codebook-size 32 --device cpu".split()  # noqa: E501
# 20 pre-training steps, k-means, 30 VQ steps on 128 images (4 batches an epoch).
QUICK = (
    TINY
    + (
        "--pretrain-steps 20 --steps 30 --batch-size 32 --lr 3e-3 --warmup-steps 5 "
        "--limit-train 128 --limit-test 64 --kmeans-images 128 --dead-code-threshold 3 "
        "--log-every 1 --eval-every 25 --eval-images 32 --sample-every 25 --ckpt-every 10"
    ).split()
)


@pytest.fixture(scope="session")
def folder_dir(tmp_path_factory):
    """Part of the sample as a folder dataset: train/<digit>/*.png and test/<digit>/*.png."""
    d = np.load(DATA)
    root = tmp_path_factory.mktemp("mnist-png")
    for split, n in (("train", 128), ("test", 32)):
        for i, (img, label) in enumerate(
            zip(d[f"{split}_images"][:n], d[f"{split}_labels"][:n], strict=False)
        ):
            folder = root / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """Training installs SIGINT/SIGTERM handlers; pytest's must be back after each test."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def step_records(run_dir: Path) -> list[dict]:
    return [r for r in records(run_dir) if "loss" in r]


def fail_with(capsys, argv, main=train_train.main) -> str:
    """Run a CLI in-process, expect exit code 2, return its stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir):
    """One finished tiny run (pre-training, k-means, VQ) on ``--preset mnist``."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        train_train.main(
            ["--preset", "mnist", "--data-dir", str(mnist_dir), "--out", str(out), *QUICK]
        )
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    return out


# ----------------------------------------------------------------------------- a run
def test_three_phases_lower_the_loss(finished_run):
    recs = records(finished_run)
    steps = step_records(finished_run)
    pre = [r["loss"] for r in steps if r["phase"] == "pretrain"]
    vq = [r["loss"] for r in steps if r["phase"] == "vq"]
    assert len(pre) == 20 and len(vq) == 30
    assert [r["step"] for r in steps] == list(range(1, 51))
    # single steps are noisy: compare the first and last few
    assert np.mean(pre[-3:]) < 0.8 * np.mean(pre[:3])
    assert np.mean(vq[-3:]) < np.mean(vq[:3])
    # the codebook is initialised by k-means exactly once, between the phases
    kmeans = [r for r in recs if r.get("event") == "kmeans_init"]
    assert len(kmeans) == 1 and kmeans[0]["step"] == 20
    assert np.isfinite(kmeans[0]["inertia_per_sample"])
    assert recs.index(kmeans[0]) == 20  # after the 20 pre-training lines, before VQ's
    assert all(r["codes_used"] > 1 for r in steps if r["phase"] == "vq")
    # a periodic eval at step 25 and a final one over the whole test split
    assert [r["step"] for r in recs if "eval" in r and not r.get("final")] == [25]
    final = [r for r in recs if r.get("final")]
    assert len(final) == 1 and final[0]["eval"]["num_images"] == 64
    assert final[0]["eval"]["psnr"] > 8

    for name in (
        "checkpoint.pt",
        "model.safetensors",
        "config.json",
        "train_config.json",
        "summary.json",
    ):
        assert (finished_run / name).is_file(), name
    assert sorted(p.name for p in (finished_run / "samples").glob("*.png")) == [
        "step_000025.png",
        "step_000050.png",
    ]
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["step"] == summary["total_steps"] == 50 and not summary["interrupted"]
    assert summary["final_eval"] == final[0]["eval"]
    tc = json.loads((finished_run / "train_config.json").read_text())
    assert tc["preset"] == "mnist" and tc["codebook_size"] == 32 and tc["world_size"] == 1

    model = vqvae.load_pretrained(finished_run)
    assert model.config.codebook_size == 32 and model.config.dead_code_threshold == 3
    test = np.load(DATA)["test_images"]
    x = torch.from_numpy(test[spread(len(test), 64).numpy()]).float() / 255  # --limit-test 64
    codes = model.encode(x)
    assert codes.shape == (64, 7, 7) and codes.dtype == torch.int64
    # the saved weights are the final ones: they reproduce the final eval's PSNR
    ev = train_evaluate.evaluate(model, (x * 255).round().to(torch.uint8), progress=False)
    assert ev["psnr"] == pytest.approx(final[0]["eval"]["psnr"], abs=1e-5)


def test_folder_dataset_trains_and_restores_signal_handlers(tmp_path, folder_dir):
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "run"
    train_train.main(
        [
            "--preset",
            "folder",
            "--data-dir",
            str(folder_dir),
            "--out",
            str(out),
            "--in-channels",
            "1",
            "--image-size",
            "28",
            *TINY,
            "--pretrain-steps",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "32",
            "--kmeans-images",
            "64",
            "--log-every",
            "1",
        ]
    )
    # a caller's Ctrl-C works again once training has returned
    assert signal.getsignal(signal.SIGINT) is before
    tc = json.loads((out / "train_config.json").read_text())
    assert tc["dataset"] == "folder" and tc["data_source"] == f"image folder {folder_dir}"
    model = vqvae.load_pretrained(out)
    assert (model.config.in_channels, model.config.image_size) == (1, 28)
    assert [r["step"] for r in step_records(out)] == [1, 2, 3, 4, 5]
    final = [r for r in records(out) if r.get("final")]
    assert final[0]["eval"]["num_images"] == 32


# ----------------------------------------------------------------------------- exact resume
def _subprocess_env() -> dict:
    # one thread, like the in-process runs: the same float results
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, mnist_dir):
    # 4 batches an epoch, so the run crosses many epochs; restarts after 3 unused steps
    opts = [
        "--preset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        *QUICK,
        "--steps",
        "100",
        "--ckpt-every",
        "100000",
        "--eval-every",
        "100000",
        "--sample-every",
        "100000",
    ]

    # B: interrupted by Ctrl-C during the VQ phase
    run_b = tmp_path / "b"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", *opts, "--out", str(run_b)],
        cwd=tmp_path,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        metrics = run_b / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and metrics.read_text().count("\n") >= 35:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT: saving a checkpoint" in err and "--resume" in err
    ckpt = torch.load(run_b / "checkpoint.pt", weights_only=True)
    stopped_at = ckpt["step"]
    assert 35 <= stopped_at < 120
    summary = json.loads((run_b / "summary.json").read_text())
    assert summary["interrupted"] and summary["step"] == stopped_at
    assert [r["step"] for r in step_records(run_b)] == list(range(1, stopped_at + 1))

    # A: the same run without interruption, counting dead-code restarts; B resumed. Each in a
    # fresh process, as B's first part ran: this process's history (a served app tunes the
    # allocator) may move float rounding in the last bit.
    run_a = tmp_path / "a"
    count = (
        "import json, sys, vqvae, train.train as t\n"
        "n, orig = [], vqvae.VectorQuantizer._restart_dead_codes\n"
        "def counting(self, flat, counts):\n"
        "    before = self.embedding.detach().clone()\n"
        "    orig(self, flat, counts)\n"
        "    n.append(int((before != self.embedding).any(1).sum()))\n"
        "vqvae.VectorQuantizer._restart_dead_codes = counting\n"
        "t.main(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write(json.dumps(n))\n"
    )
    counts = tmp_path / "restarts.json"
    for argv in (
        ["-c", count, str(counts), *opts, "--out", str(run_a)],
        ["-m", "train", "--out", str(run_b), "--resume"],
    ):
        done = subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, env=_subprocess_env(), capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    restarts = json.loads(counts.read_text())
    # restarts happen after the interruption, so the restored RNG state matters
    assert sum(restarts[stopped_at - 20 :]) > 0

    # B resumed finishes with exactly A's per-step figures and weights
    a, b = step_records(run_a), step_records(run_b)
    assert [r["step"] for r in b] == list(range(1, 121))
    for ra, rb in zip(a, b, strict=False):
        for timing in ("images_per_s", "elapsed_s"):
            ra.pop(timing), rb.pop(timing)
        assert ra == rb, f"step {ra['step']} differs after resuming at {stopped_at}"
    wa, wb = load_file(run_a / "model.safetensors"), load_file(run_b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert records(run_a)[-1]["eval"] == records(run_b)[-1]["eval"]
    assert json.loads((run_b / "summary.json").read_text())["interrupted"] is False


def test_resume_may_extend_steps(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    train_train.main(["--out", str(run), "--resume", "--steps", "35"])
    steps = [r["step"] for r in step_records(run)]
    assert steps == list(range(1, 51)) + list(range(51, 56))
    assert sum(r.get("event") == "kmeans_init" for r in records(run)) == 1  # not redone
    assert json.loads((run / "summary.json").read_text())["step"] == 55


def test_resuming_a_finished_run_changes_nothing(capsys, tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _snapshot(run)
    train_train.main(["--out", str(run), "--resume"])
    assert "already finished at step 50 of 50; nothing to do" in capsys.readouterr().err
    assert _snapshot(run) == before  # no second "final" eval line, summary kept


# ----------------------------------------------------------------------------- export
@pytest.mark.slow
def test_export_writes_a_loadable_model_whose_metrics_evaluate_reproduces(tmp_path, finished_run):
    out = train_export.export(
        finished_run,
        "tiny",
        out_root=tmp_path / "pretrained",
        assets=tmp_path / "assets",
        progress=False,
    )
    assert out == tmp_path / "pretrained" / "tiny"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "code_patches.npz",
        "codebook.json",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    model = vqvae.load_pretrained(out)
    ref = vqvae.load_pretrained(finished_run)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=False)
    )

    info = json.loads((out / "codebook.json").read_text())
    assert len(info["usage"]) == 32 and sum(info["usage"]) == 512 * 7 * 7  # whole train split
    assert np.array(info["umap_2d"]).shape == (32, 2)
    assert np.array(info["umap_3d"]).shape == (32, 3)
    assert np.isfinite(info["umap_3d"]).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tiny" and metrics["num_images"] == 128
    tc = json.loads((finished_run / "train_config.json").read_text())
    again = train_evaluate.evaluate_model(str(out), "mnist", tc["data_dir"], progress=False)
    for k in ("psnr", "ssim", "mse"):
        assert again[k] == pytest.approx(metrics[k], abs=1e-6), k
    assert again["codes_used"] == metrics["codes_used"]

    card = (out / "README.md").read_text()
    assert f"{metrics['psnr']:.2f} dB" in card and "K=32" in card
    assert len(list((tmp_path / "assets" / "examples" / "tiny").glob("*.png"))) == 8
    assert (tmp_path / "assets" / "reconstructions" / "tiny.png").is_file()


@pytest.mark.slow
def test_float16_export_measures_the_shipped_weights_and_names_every_option(tmp_path, finished_run):
    out = train_export.export(
        finished_run,
        "half",
        out_root=tmp_path / "pretrained",
        assets=tmp_path / "assets",
        progress=False,
        dtype="float16",
    )
    stored = load_file(str(out / "model.safetensors"))
    assert stored["encoder.net.0.weight"].dtype == torch.float16
    metrics = json.loads((out / "metrics.json").read_text())
    tc = json.loads((finished_run / "train_config.json").read_text())
    again = train_evaluate.evaluate_model(str(out), "mnist", tc["data_dir"], progress=False)
    for k in ("psnr", "ssim", "mse"):
        assert again[k] == pytest.approx(metrics[k], abs=1e-6), k
    card = (out / "README.md").read_text()
    assert "float16 safetensors" in card
    # the card's command rebuilds this architecture, not the preset's
    for flag in (
        "--hidden-channels 16",
        "--res-channels 8",
        "--res-layers 1",
        "--embedding-dim 8",
        "--codebook-size 32",
    ):
        assert flag in card, flag
    # and every other option: the command, run, builds this run's config exactly
    (command,) = re.findall(r"Training command: `(.+)`", card)
    assert _rebuilt(command, tc) == {
        k: tc[k] for k in dataclasses.asdict(train_train.TrainConfig())
    }
    assert not list((tmp_path / "pretrained").glob(".*"))  # no temporary folders left


def test_failed_export_leaves_no_temporary_folder(tmp_path, finished_run):
    with pytest.raises(DatasetNotFoundError):
        train_export.export(
            finished_run,
            "broken",
            data_dir=str(tmp_path / "nowhere"),
            out_root=tmp_path / "pretrained",
            assets=tmp_path / "assets",
            progress=False,
        )
    assert list((tmp_path / "pretrained").iterdir()) == []


# ----------------------------------------------------------------------------- errors
def test_unknown_preset(capsys, tmp_path):
    err = fail_with(capsys, ["--preset", "imagenet", "--out", str(tmp_path / "r")])
    assert "unknown preset 'imagenet'" in err and "mnist" in err
    assert not (tmp_path / "r").exists()


def test_unknown_dataset(capsys, tmp_path):
    err = fail_with(capsys, ["--dataset", "imagenet", "--out", str(tmp_path / "r")])
    assert "invalid choice: 'imagenet'" in err
    assert not (tmp_path / "r").exists()


def test_missing_data_folder(capsys, tmp_path):
    err = fail_with(
        capsys, ["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TINY]
    )
    assert f"data folder {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("layout", ["no class folders", "empty class folder"])
def test_empty_folder_dataset(capsys, tmp_path, layout):
    data = tmp_path / "data"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
        if layout == "empty class folder":
            (data / split / "digits").mkdir()
    err = fail_with(
        capsys, ["--preset", "folder", "--data-dir", str(data), "--out", str(tmp_path / "r"), *TINY]
    )
    assert f"{data / 'train'}: no images found" in err
    assert not (tmp_path / "r").exists()


def _snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def test_existing_run_is_not_overwritten_without_resume(capsys, tmp_path, finished_run, mnist_dir):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _snapshot(run)
    err = fail_with(
        capsys, ["--preset", "mnist", "--data-dir", str(mnist_dir), "--out", str(run), *QUICK]
    )
    assert "already holds a run; pass --resume" in err
    assert _snapshot(run) == before


def test_resume_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"not really")
    err = fail_with(capsys, ["--out", str(tmp_path / "photos"), "--resume"])
    assert "cannot resume" in err and "not a run folder" in err
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.png"]


def test_resume_with_a_corrupt_checkpoint(capsys, tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    prev = run / "checkpoint.prev.pt"  # and no fallback: the previous one is bad too
    prev.write_bytes(prev.read_bytes()[:1000])
    before = _snapshot(run)
    err = fail_with(capsys, ["--out", str(run), "--resume"])
    assert f"{ckpt} is corrupt or unreadable" in err
    assert _snapshot(run) == before


def test_evaluate_on_a_folder_without_a_model(capsys, tmp_path):
    err = fail_with(
        capsys,
        [str(tmp_path), "--dataset", "mnist", "--data-dir", str(tmp_path)],
        main=train_evaluate.main,
    )
    assert "no model at" in err and "model.safetensors" in err


def test_export_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    err = fail_with(
        capsys,
        [
            str(tmp_path),
            "--name",
            "x",
            "--out-root",
            str(tmp_path / "pretrained"),
            "--assets",
            str(tmp_path / "assets"),
        ],
        main=train_export.main,
    )
    assert "is not a training run folder" in err
    assert not (tmp_path / "pretrained").exists() and not (tmp_path / "assets").exists()


@pytest.mark.parametrize("caught_by", ["logged loss", "checkpoint"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    capsys, tmp_path, mnist_dir, monkeypatch, caught_by
):
    # from the 8th VQ step on the loss is NaN (as after a too-high learning rate)
    run = tmp_path / "run"
    kept = {}
    orig = vqvae.VQVAE.forward
    calls = []

    def poisoned(self, x, quantize=True):
        o = orig(self, x, quantize=quantize)
        if self.training and quantize:
            calls.append(1)
            if len(calls) == 8:
                kept.update(_snapshot(run))
            if len(calls) >= 8:
                o.loss = o.loss * float("nan")
        return o

    monkeypatch.setattr(vqvae.VQVAE, "forward", poisoned)
    log_every, ckpt_every = ("1", "5") if caught_by == "logged loss" else ("1000", "1")
    err = fail_with(
        capsys,
        [
            "--preset",
            "mnist",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(run),
            *TINY,
            "--pretrain-steps",
            "0",
            "--steps",
            "20",
            "--batch-size",
            "32",
            "--limit-train",
            "128",
            "--kmeans-images",
            "64",
            "--log-every",
            log_every,
            "--ckpt-every",
            ckpt_every,
        ],
    )
    if caught_by == "logged loss":
        assert "loss became nan at step 8" in err
    else:
        assert "weights became NaN/inf at step 8" in err
    assert "the last good checkpoint" in err
    assert kept["checkpoint.pt"] and _snapshot(run) == kept
    good = torch.load(run / "checkpoint.pt", weights_only=True)
    assert good["step"] == (5 if caught_by == "logged loss" else 7)
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- options
def _rebuilt(command: str, tc: dict) -> dict:
    """The config ``python -m train`` builds from a model card's command (DATA_DIR filled in)."""
    assert command.startswith("python -m train "), command
    return dataclasses.asdict(train_export.command_config(command, tc))


def _options(tc: dict) -> dict:
    """The TrainConfig fields of a train_config.json."""
    return {k: tc[k] for k in dataclasses.asdict(train_train.TrainConfig())}


def _changed(name: str, value):
    """A valid value other than ``value`` for a TrainConfig field."""
    special = dict(
        preset="cifar10",
        recipe="ema",
        dataset="folder",
        model_preset="fashion-mnist",
        data_dir="elsewhere",
        out="runs/elsewhere",
        device="cpu",
        downsample=8,
        in_channels=1,
        image_size=64,
        init_from="cifar10",
        pretrain_steps=0,  # --init-from needs it
        first_stage_share=0.5,
        teacher="",  # excludes --init-from: the test below sets it in another config
        freeze="decoder",
    )
    if name in special:
        return special[name]
    if isinstance(value, bool):
        return not value
    if value is None:
        return 3
    if isinstance(value, float):
        return value * 2 + 0.125
    return value + 7


def test_every_option_is_a_flag_and_the_card_command_rebuilds_every_option():
    fields = dataclasses.fields(train_train.TrainConfig)
    help_text = train_train.make_parser().format_help()
    for f in fields:
        assert train_train.flag(f.name) in help_text, f.name
        assert f.metadata["help"], f.name
    # a run with every option away from its default: the command names each one
    cfg = train_train.TrainConfig(**{f.name: _changed(f.name, f.default) for f in fields})
    tc = {**dataclasses.asdict(cfg), "world_size": 1, "data_source": "x"}
    rebuilt = _rebuilt(train_export.training_command(tc), tc)
    assert rebuilt == dataclasses.asdict(cfg)
    distilled = dataclasses.replace(cfg, init_from="", teacher="cifar10")
    tc = {**dataclasses.asdict(distilled), "world_size": 1, "data_source": "x"}
    assert _rebuilt(train_export.training_command(tc), tc) == dataclasses.asdict(distilled)
    # torchrun runs name the launcher
    cmd = train_export.training_command({**tc, "world_size": 4})
    assert cmd.startswith("torchrun --nproc_per_node=4 -m train --preset cifar10")


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--lr", "1e-3"], "--lr 0.001 (the run has 0.003)"),
        (["--no-use-ema", "--steps", "40"], "--use-ema False (the run has True)"),
        (["--hidden-channels", "32"], "--hidden-channels 32 (the run has 16)"),
    ],
)
def test_resume_refuses_options_it_would_ignore(capsys, tmp_path, finished_run, flags, named):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _snapshot(run)
    err = fail_with(capsys, ["--out", str(run), "--resume", *flags])
    assert "cannot change" in err and named in err and "--steps" in err
    assert _snapshot(run) == before


def test_resume_accepts_options_equal_to_the_runs(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    train_train.main(
        ["--out", str(run), "--resume", "--preset", "mnist", "--lr", "3e-3", "--steps", "32"]
    )
    assert [r["step"] for r in step_records(run)][-2:] == [51, 52]


def test_old_flag_names_point_to_the_new_ones(capsys, tmp_path):
    err = fail_with(capsys, ["--ema", "--out", str(tmp_path / "r")])
    assert "--ema is now --use-ema" in err
    err = fail_with(capsys, ["--channels", "1", "--out", str(tmp_path / "r")])
    assert "--channels is now --in-channels" in err
    assert not (tmp_path / "r").exists()


def test_run_folders_with_the_old_option_names_still_resume_and_export(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    tc = json.loads((run / "train_config.json").read_text())
    old = dict(tc)
    for key, renamed in (
        ("model", "model_preset"),
        ("ema", "use_ema"),
        ("channels", "in_channels"),
    ):
        old[key] = old.pop(renamed)
    (run / "train_config.json").write_text(json.dumps(old))
    assert train_runs.read_train_config(run) == tc
    train_train.main(["--out", str(run), "--resume", "--steps", "31"])
    assert json.loads((run / "summary.json").read_text())["step"] == 51
    # the resumed run writes today's names
    assert json.loads((run / "train_config.json").read_text())["use_ema"] is True


# ----------------------------------------------------------------------------- kills, full disks
def test_resume_falls_back_to_the_previous_checkpoint_and_logs_each_step_once(
    capsys, tmp_path, finished_run
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # the newest one is cut short
    train_train.main(["--out", str(run), "--resume"])
    err = capsys.readouterr().err
    assert f"{ckpt} is corrupt or unreadable" in err
    assert "resuming from the previous checkpoint" in err and "(step 40)" in err
    # steps 41..50 ran again; their old lines were dropped, so each step is logged once
    recs = records(run)
    assert [r["step"] for r in step_records(run)] == list(range(1, 51))
    assert [r["step"] for r in recs if "eval" in r] == [25, 50]
    assert sum(r.get("event") == "kmeans_init" for r in recs) == 1
    # and ends where the uninterrupted run did (bit for bit in a fresh process, as the Ctrl-C
    # test shows; here an export earlier in this process may have loaded a library that
    # changes float rounding of denormals)
    final = [r["eval"]["psnr"] for r in (records(finished_run)[-1], recs[-1])]
    assert final[1] == pytest.approx(final[0], abs=0.05)


def test_truncate_metrics_drops_what_a_resume_writes_again(tmp_path):
    lines = [
        dict(step=19, loss=1.0),
        dict(step=20, loss=1.0),
        dict(step=20, eval=dict(psnr=9.0)),
        dict(step=20, event="kmeans_init"),
        dict(step=21, loss=1.0),
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines)
    (tmp_path / "metrics.jsonl").write_text(text + '{"step": 22, "lo')  # cut by the kill
    # a checkpoint at step 20 taken before the k-means init: that line comes again
    assert train_runs.truncate_metrics(tmp_path, 20, kmeans_done=False) == 3
    assert records(tmp_path) == lines[:3]
    assert train_runs.truncate_metrics(tmp_path, 20, kmeans_done=False) == 0


@pytest.mark.parametrize("stage", ["checkpoint", "samples"])
def test_a_full_disk_ends_in_one_message_and_leaves_no_temp_file(
    capsys, tmp_path, mnist_dir, monkeypatch, stage
):
    run = tmp_path / "run"
    full = OSError(errno.ENOSPC, "No space left on device")
    if stage == "checkpoint":  # the second checkpoint fills the disk half-way
        saves, real_save = [], torch.save

        def save(obj, f, *a, **kw):
            saves.append(1)
            if len(saves) == 2:
                f.write(b"x" * 1000)
                raise full
            return real_save(obj, f, *a, **kw)

        monkeypatch.setattr(torch, "save", save)
    else:

        def save_samples(state):
            raise OSError(errno.ENOSPC, "No space left on device", str(run / "samples" / "x"))

        monkeypatch.setattr(train_train.RunState, "save_samples", save_samples)
    err = fail_with(
        capsys,
        [
            "--preset", "mnist", "--data-dir", str(mnist_dir), "--out", str(run), *TINY,
            "--pretrain-steps", "0", "--steps", "12", "--batch-size", "32",
            "--limit-train", "128", "--kmeans-images", "64", "--ckpt-every", "5",
            "--sample-every", "7",
        ],
    )  # fmt: skip
    assert "No space left on device" in err or "no space left" in err
    assert f"python -m train --out {run} --resume" in err
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 5  # the last good one, intact
    if stage == "checkpoint":
        assert "could not save the checkpoint of step 10" in err


# ----------------------------------------------------------------------------- export, killed
class Killed(BaseException):
    """Stands for a kill: nothing after the failure point runs."""


@pytest.fixture
def cheap_export(monkeypatch):
    """Export without the UMAP projection (seconds saved; the layout is tested above)."""
    monkeypatch.setattr(
        train_export, "codebook_info", lambda model, counts: {"usage": counts.tolist()}
    )


def _old_model(root: Path, tiny_config) -> dict:
    torch.manual_seed(1)
    vqvae.VQVAE(tiny_config).save_pretrained(root / "m")
    return load_file(root / "m" / "model.safetensors")


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("stage", ["metrics", "codebook", "card", "rename"])
def test_a_failed_export_keeps_the_old_model(
    tmp_path, finished_run, tiny_config, monkeypatch, cheap_export, stage
):
    root = tmp_path / "pretrained"
    old = _old_model(root, tiny_config)

    def fail(*a, **kw):
        raise Killed

    if stage == "rename":  # where the system cannot exchange folders: fail between renames
        monkeypatch.setattr(train_export, "_swap_dirs", lambda a, b: False)
        real_rename = os.rename

        def rename(src, dst):
            if Path(dst) == root / "m" and Path(src).name.endswith(".tmp"):
                raise Killed  # the new model fails to move in; the old one must go back
            real_rename(src, dst)

        monkeypatch.setattr(train_export.os, "rename", rename)
    else:
        target = dict(metrics="metrics_record", codebook="codebook_info", card="training_command")
        monkeypatch.setattr(train_export, target[stage], fail)
    with pytest.raises(Killed):
        train_export.export(finished_run, "m", out_root=root, assets=tmp_path / "a", progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["m"]
    new = _weights(root / "m")
    assert all(torch.equal(old[k], new[k]) for k in old)


def test_export_after_a_kill_cleans_up_and_restores(
    tmp_path, finished_run, tiny_config, cheap_export
):
    root = tmp_path / "pretrained"
    old = _old_model(root, tiny_config)
    # killed while building (a temp folder stays) and, with two renames, between them
    (root / ".m.k3j4h2.tmp").mkdir()
    (root / ".m.tmp").mkdir()  # the old fixed name
    (root / "m").rename(root / ".m.old")
    train_export.clean_stale(root, "m")
    assert sorted(p.name for p in root.iterdir()) == ["m"]
    assert all(torch.equal(old[k], v) for k, v in _weights(root / "m").items())

    (root / ".m.x1.tmp").mkdir()
    train_export.export(finished_run, "m", out_root=root, assets=tmp_path / "a", progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["m"]
    ref = _weights(finished_run)
    assert all(torch.equal(ref[k], v) for k, v in _weights(root / "m").items())


def test_replacing_a_model_folder_is_one_atomic_exchange(tmp_path):
    a, b = tmp_path / "new", tmp_path / "final"
    a.mkdir(), b.mkdir()
    (a / "new.txt").write_text("n"), (b / "old.txt").write_text("o")
    if not train_export._swap_dirs(a, b):
        pytest.skip("this file system cannot exchange folders atomically")
    assert [p.name for p in b.iterdir()] == ["new.txt"]
    assert [p.name for p in a.iterdir()] == ["old.txt"]


# ----------------------------------------------------------------------------- --compile
def test_eval_lines_say_their_phase(finished_run):
    evals = [r for r in records(finished_run) if "eval" in r]
    assert [(r["step"], r["phase"]) for r in evals] == [(25, "vq"), (50, "vq")]


@pytest.mark.slow
def test_compiled_step_trains_as_the_eager_one(tmp_path, mnist_dir):
    # Dead-code restarts draw random rows; inductor has its own random number generator unless
    # told to fall back to eager's, and then the compiled run picks the same rows.
    import torch._inductor.config

    opts = [
        "--preset", "mnist", "--data-dir", str(mnist_dir), *TINY, "--pretrain-steps", "0",
        "--steps", "6", "--batch-size", "32", "--lr", "3e-3", "--warmup-steps", "2",
        "--limit-train", "128", "--limit-test", "32", "--kmeans-images", "64",
        "--dead-code-threshold", "2", "--log-every", "1",
    ]  # fmt: skip
    train_train.main([*opts, "--out", str(tmp_path / "eager")])
    with torch._inductor.config.patch(fallback_random=True):
        train_train.main([*opts, "--out", str(tmp_path / "compiled"), "--compile"])
    eager, compiled = step_records(tmp_path / "eager"), step_records(tmp_path / "compiled")
    assert [r["step"] for r in compiled] == list(range(1, 7))
    for a, b in zip(eager, compiled, strict=True):
        assert b["recon_loss"] == pytest.approx(a["recon_loss"], rel=1e-3), a["step"]
        assert b["codes_used"] == a["codes_used"], a["step"]


def test_the_run_check_tool_rebuilds_a_run_from_its_card_command(finished_run, capsys):
    from tools import check_gpu_runs

    assert check_gpu_runs.main([str(finished_run)]) == 0
    assert "rebuilds its run" in capsys.readouterr().out


def test_residual_stages_from_a_trained_run_keep_its_stages(tmp_path, finished_run, mnist_dir):
    """--init-from a run, --num-stages: the loaded stages are not k-means refit, the new
    ones are; a 2-stage run grown to 3 refits only stage 3. The evaluation reports the
    PSNR of every prefix of stages."""
    from vqvae import VQVAE

    common = [*TINY, "--data-dir", str(mnist_dir), "--pretrain-steps", "0", "--steps", "4",
              "--batch-size", "16", "--limit-train", "64", "--limit-test", "16",
              "--kmeans-images", "64", "--eval-every", "4", "--eval-images", "16"]  # fmt: skip
    two, three = tmp_path / "two", tmp_path / "three"
    train_train.main([*common, "--out", str(two), "--init-from", str(finished_run),
                      "--num-stages", "2"])  # fmt: skip
    refit = [r["stage"] for r in records(two) if r.get("event") == "kmeans_init"]
    assert refit == [2]
    train_train.main([*common, "--out", str(three), "--init-from", str(two),
                      "--num-stages", "3", "--first-stage-share", "0.5"])  # fmt: skip
    assert [r["stage"] for r in records(three) if r.get("event") == "kmeans_init"] == [3]
    final = [r for r in records(three) if r.get("final")][0]["eval"]
    assert len(final["psnr_stages"]) == 3
    assert final["psnr_stages"][2] == pytest.approx(final["psnr"])
    # its card names the stages and each prefix's PSNR
    folder = train_export.export(
        three, "rvq", out_root=tmp_path / "models", assets=tmp_path / "assets", progress=False,
        patches=False,
    )  # fmt: skip
    card = (folder / "README.md").read_text()
    assert "3 residual stages, the first n of which decode alone (3 rates)" in card
    psnr = json.loads((folder / "metrics.json").read_text())["psnr_stages"]
    assert f"| PSNR from the first 1, 2, .. 3 stages | {psnr[0]:.2f} / " in card
    assert VQVAE.from_pretrained(folder).config.num_stages == 3


def test_freeze_fits_the_decoder_alone_and_keeps_the_codes(capsys, tmp_path, finished_run,
                                                          mnist_dir):  # fmt: skip
    """--freeze encoder,quantizer: the decoder learns, the encoder and every codebook
    (with its EMA state) stay as loaded, so the codes of any image are the source's, also
    after a resume. Freezing without loaded weights, an unknown part or every part is
    refused."""
    from vqvae import VQVAE

    common = [*TINY, "--data-dir", str(mnist_dir), "--pretrain-steps", "0", "--batch-size",
              "16", "--lr", "3e-3", "--limit-train", "64", "--limit-test", "16",
              "--eval-every", "4", "--eval-images", "16", "--no-kmeans"]  # fmt: skip
    out = tmp_path / "decoder"
    frozen = ["--init-from", str(finished_run), "--freeze", "encoder,quantizer"]
    train_train.main([*common, *frozen, "--out", str(out), "--steps", "3"])
    train_train.main([*common, *frozen, "--out", str(out), "--steps", "6", "--resume"])
    src, fit = VQVAE.from_pretrained(finished_run), VQVAE.from_pretrained(out)
    before, after = src.state_dict(), fit.state_dict()
    kept = [k for k in after if not k.startswith("decoder.")]
    assert kept and all(torch.equal(after[k], before[k]) for k in kept)
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("decoder."))
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(fit.encode(x), src.encode(x))
    assert "--freeze keeps loaded weights" in fail_with(
        capsys, [*common, "--out", str(tmp_path / "a"), "--freeze", "decoder"]
    )
    assert "unknown part 'head'" in fail_with(
        capsys,
        [
            *common,
            "--out",
            str(tmp_path / "b"),
            "--init-from",
            str(finished_run),
            "--freeze",
            "encoder,head",
        ],  # fmt: skip
    )
    assert "nothing to train" in fail_with(
        capsys,
        [
            *common,
            "--out",
            str(tmp_path / "c"),
            "--init-from",
            str(finished_run),
            "--freeze",
            "encoder,quantizer,decoder",
        ],  # fmt: skip
    )


def test_first_stage_share_draws_stage_one_alone_for_that_share():
    from vqvae import VQVAE, VQVAEConfig

    m = VQVAE(VQVAEConfig(hidden_channels=16, res_channels=8, embedding_dim=8, codebook_size=16,
                          num_stages=4, image_size=16))  # fmt: skip
    torch.manual_seed(0)
    n = m._stages_kept(20_000, "cpu").flatten()
    assert set(n.tolist()) == {1, 2, 3, 4}
    assert abs((n == 1).float().mean() - 0.25) < 0.02  # uniform over 1..4
    m.first_stage_share = 0.5
    n = m._stages_kept(20_000, "cpu").flatten()
    assert abs((n == 1).float().mean() - 0.5) < 0.02
    for s in (2, 3, 4):
        assert abs((n == s).float().mean() - 0.5 / 3) < 0.02


def test_a_narrower_student_learns_the_teachers_codes_with_its_codebooks_frozen(
    capsys, tmp_path, finished_run, mnist_dir
):
    """--teacher: the student (other widths) takes the teacher's codebooks and keeps them
    through training and a resume; its encoder learns the teacher's latents (the
    distillation loss falls, more of its codes agree with the teacher's); a teacher with
    another grid or codebook is refused with the field named."""
    from vqvae import VQVAE

    teacher = VQVAE.from_pretrained(finished_run)
    out = tmp_path / "student"
    student = [*TINY, "--hidden-channels", "32", "--res-layers", "2", "--data-dir",
               str(mnist_dir), "--pretrain-steps", "0", "--batch-size", "32", "--lr", "3e-3",
               "--warmup-steps", "5", "--limit-train", "128", "--limit-test", "64",
               "--log-every", "1", "--eval-every", "5", "--eval-images", "64",
               "--teacher", str(finished_run), "--out", str(out)]  # fmt: skip
    train_train.main([*student, "--steps", "40"])
    train_train.main([*student, "--steps", "50", "--resume"])
    model = VQVAE.from_pretrained(out)
    assert model.config.hidden_channels == 32 and model.config.res_layers == 2
    assert torch.equal(model.codebook, teacher.codebook)  # no EMA update, no restart
    assert not [r for r in records(out) if r.get("event") == "kmeans_init"]
    steps = step_records(out)
    assert len(steps) == 50
    assert steps[-1]["distill_loss"] < 0.5 * steps[0]["distill_loss"]
    evals = [r["eval"] for r in records(out) if "eval" in r]
    assert evals[-1]["teacher_codes_agree"][0] > evals[0]["teacher_codes_agree"][0]
    models, assets = tmp_path / "models", tmp_path / "assets"
    folder = train_export.export(out, "student", out_root=models, assets=assets,
                                 progress=False, patches=False)  # fmt: skip
    assert f"distilled from `{finished_run}`: its codebooks copied and kept frozen" in (
        folder / "README.md").read_text()  # fmt: skip
    # another codebook: refused before anything is written
    err = fail_with(capsys, [*student, "--steps", "5", "--codebook-size", "64", "--out",
                             str(tmp_path / "other")])  # fmt: skip
    assert "--teacher" in err and "codebook_size 32 vs 64" in err
    assert not (tmp_path / "other" / "metrics.jsonl").exists()
