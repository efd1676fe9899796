"""The benchmark scripts' own logic (their training runs are what train's tests cover)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vqvae
from benchmarks import capacity, speed
from codec_helpers import codec_pair, make_prior

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("row", sorted(capacity.ROWS))
def test_every_capacity_row_builds_a_network_with_the_same_bits(row):
    base = vqvae.preset("mnist")
    cfg = vqvae.preset("mnist", **capacity.ROWS[row])
    model = vqvae.VQVAE(cfg).train()
    out = model(torch.rand(4, 1, 28, 28))
    assert out.indices.shape == (4, 7, 7) and torch.isfinite(out.loss)
    assert (cfg.codebook_size, cfg.downsample) == (base.codebook_size, base.downsample)


def _report(tmp_path, name, steps, rows):
    report = dict(
        dataset="mnist",
        steps=steps,
        batch_size=128,
        seed=0,
        device="cpu",
        torch=torch.__version__,
        codebook_size=512,
        rows=rows,
    )
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


def _row(name, psnr):
    return dict(
        row=name,
        overrides=capacity.ROWS[name],
        params=690000,
        psnr=psnr,
        ssim=0.9,
        codes_used=512,
        codes_used_fraction=1.0,
        perplexity=300.0,
        step_ms=100.0,
        curve=[[1000, psnr - 1], [2000, psnr]],
    )


@pytest.mark.slow
def test_merge_prints_one_table_from_several_files(tmp_path):
    a = _report(tmp_path, "a.json", 2000, [_row("preset", 26.5)])
    b = _report(tmp_path, "b.json", 2000, [_row("wide", 27.25)])
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity", "--merge", a, b],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "| preset (as the preset) | 0.69 M | 26.50 |" in out
    assert "| wide (hidden_channels=256, res_channels=64) | 0.69 M | 27.25 |" in out
    assert "wide: 1000: 26.25, 2000: 27.25" in out


@pytest.mark.slow
def test_merge_refuses_files_with_different_budgets(tmp_path):
    a = _report(tmp_path, "a.json", 2000, [_row("preset", 26.5)])
    b = _report(tmp_path, "b.json", 4000, [_row("wide", 27.25)])
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity", "--merge", a, b],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode != 0 and "different datasets, budgets or seeds" in res.stderr


@pytest.mark.parametrize(
    "elapsed, expect",
    [(930.0, "after 4000 steps, 15.5 min"), (None, "after 4000 steps, time not recorded")],
)
@pytest.mark.slow
def test_speed_reads_time_to_target_from_a_run(tmp_path, elapsed, expect):
    lines = [
        dict(step=100, loss=0.1),
        dict(step=2000, eval=dict(psnr=24.1)),
        dict(step=4000, eval=dict(psnr=24.6)),
    ]
    if elapsed is not None:  # a run that records elapsed_s on every line
        lines[1]["elapsed_s"], lines[2]["elapsed_s"] = 400.0, elapsed
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--device",
            "cpu",
            "--presets",
            "mnist",
            "--steps",
            "1",
            "--quick",
            "--no-compile",
            "--run",
            str(tmp_path),
            "--target",
            "24.5",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert f"test PSNR >= 24.5 dB {expect}" in out


def _write_run(folder, lines, pretrain_steps=None):
    folder.mkdir(exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if pretrain_steps is not None:
        (folder / "train_config.json").write_text(json.dumps(dict(pretrain_steps=pretrain_steps)))
    return folder


def test_time_to_target_counts_only_evaluations_of_the_vq_phase(tmp_path):
    # pre-training evaluations run without quantization: a high PSNR there is no target hit
    lines = [
        dict(step=1000, phase="pretrain", eval=dict(psnr=26.0), elapsed_s=60.0),
        dict(step=2000, phase="vq", eval=dict(psnr=24.0), elapsed_s=120.0),
        dict(step=3000, phase="vq", eval=dict(psnr=24.7), elapsed_s=180.0),
    ]
    assert speed.time_to_target(_write_run(tmp_path / "new", lines), 24.5) == (180.0, 3000)
    # runs written before eval lines said their phase: inferred from pretrain_steps
    old = [{k: v for k, v in r.items() if k != "phase"} for r in lines]
    run = _write_run(tmp_path / "old", old, pretrain_steps=1000)
    assert speed.time_to_target(run, 24.5) == (180.0, 3000)
    assert speed.time_to_target(run, 25.0) is None


@pytest.mark.slow
def test_speed_times_the_vq_step_against_the_autoencoder_step():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--device",
            "cpu",
            "--presets",
            "mnist",
            "--steps",
            "1",
            "--quick",
            "--no-compile",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    (row,) = [line for line in out.splitlines() if line.startswith("| mnist | eager |")]
    vq_ms, ae_ms, ratio, images = (float(c) for c in row.strip("|").split("|")[2:])
    assert vq_ms > 0 and ae_ms > 0 and images > 0
    assert ratio == pytest.approx(vq_ms / ae_ms, rel=0.02, abs=0.006)  # printed to 2 places


def test_codec_benchmark_runs_on_a_tiny_model(tiny_config, mnist_dir, tmp_path, capsys):
    from benchmarks import codec as bench

    model, _ = codec_pair(tiny_config)
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    make_prior(num_classes=10, model=model, std=0.5).save_pretrained(folder)
    out = tmp_path / "codec.json"
    args = ["--dataset", "mnist", "--model", str(folder), "--data-dir", str(mnist_dir)]
    bench.main([*args, "--limit", "3", "--out", str(out)])
    r = json.loads(out.read_text())["mnist"]
    assert r["images"] == 3 and r["exact_round_trips"] == 3 and r["labels_coded"] == "auto"
    assert r["vqz_header_bytes"] == 4 and r["class_bits"] == pytest.approx(math.log2(11))
    assert 0 <= r["classes_picked_right"] <= 1
    assert r["vqz_bytes"] == r["vqz_header_bytes"] + r["vqz_payload_bytes"]
    assert 8 * r["vqz_payload_bytes"] <= 1.01 * 8 * r["nll_bytes"] + 8
    for key in ("jpeg_file", "jpeg_payload", "webp_file", "webp_payload"):
        assert 1 <= r[key]["quality"] <= 100 and 0 < r[key]["psnr"] < 100
    # a JPEG's header alone outweighs this tiny .vqz: its smallest file is still bigger
    assert r["jpeg_file"]["file_bytes"] > r["vqz_bytes"]
    assert "VQ-VAE PSNR" in capsys.readouterr().out
    bench.main([*args, "--limit", "2", "--labels", "true", "--out", str(out)])
    r = json.loads(out.read_text())["mnist"]
    assert r["labels_coded"] == "true" and r["classes_picked_right"] is None
    assert r["exact_round_trips"] == 2
    # a model without a prior: said clearly, nothing measured
    bare = tmp_path / "bare"
    model.save_pretrained(bare)
    with pytest.raises(SystemExit) as e:
        bench.main(["--dataset", "mnist", "--model", str(bare), "--data-dir", str(mnist_dir)])
    assert e.value.code == 2
    assert "has no prior to compress with" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.browser
def test_the_switch_benchmark_times_switches_in_the_browser(prior_models, capsys):
    from benchmarks import switch
    from tools import browser

    if not Path(browser.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {browser.CHROMIUM}")
    pytest.importorskip("playwright.sync_api")
    switch.main(
        ["--models-dir", str(prior_models.models), "--examples-dir", str(prior_models.examples)]
        + ["--models", "mnist", "cifar10", "--switches", "2"]
    )
    out = capsys.readouterr().out
    assert "first switch to cifar10" in out and "to mnist: shown" in out
    assert "median of 2 switches to a loaded model" in out
