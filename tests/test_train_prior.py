"""python -m train.prior on a tiny VQ-VAE and the small MNIST sample: training lowers the
test NLL, an interrupted run resumes to exactly the weights of an uninterrupted one, the
codes are encoded once, export writes the prior and its card section beside the model, and
bad input is one clear message."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vqvae
from tools.ports import free_port
from train import prior as train_prior
from vqvae.data import load_labels, load_uint8
from vqvae.prior import PRIOR_CONFIG, PRIOR_WEIGHTS, load_prior

REPO = Path(__file__).resolve().parent.parent

# a prior that trains in milliseconds a step; 512 grids are 16 batches of 32
TINY_PRIOR = (
    "--dataset mnist --d-model 32 --n-layers 2 --n-heads 2 --dropout 0.1 --batch-size 32 "
    "--lr 3e-3 --warmup-steps 5 --device cpu --log-every 1 --eval-every 1000 "
    "--ckpt-every 1000 --sample-every 1000"
).split()


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def step_records(run: Path) -> list[dict]:
    return [r for r in records(run) if "loss" in r]


@pytest.fixture(scope="module")
def tiny_vqvae(tmp_path_factory):
    """An (untrained) tiny VQ-VAE in pretrained/tiny/ of a temporary root, with a card."""
    torch.manual_seed(0)
    config = vqvae.preset(
        "mnist", hidden_channels=16, res_channels=8, res_layers=1, embedding_dim=8,
        codebook_size=32, name="tiny",
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("pretrained") / "tiny"
    vqvae.VQVAE(config).save_pretrained(folder)
    (folder / "README.md").write_text("# VQ-VAE `tiny`\n\nThe card.\n")
    return folder


def options(tiny_vqvae, mnist_dir, out, steps=30):
    return [
        "--vqvae", str(tiny_vqvae), "--data-dir", str(mnist_dir), "--out", str(out),
        "--steps", str(steps), *TINY_PRIOR,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tiny_vqvae, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior-run") / "run"
    train_prior.main(options(tiny_vqvae, mnist_dir, out))
    return out


def test_training_lowers_the_test_nll(finished_run, tiny_vqvae):
    evals = [r for r in records(finished_run) if "eval" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 30 and last["final"]
    assert last["eval"]["num_images"] == 128  # the whole test split
    assert last["eval"]["bits_per_image"] < first["eval"]["bits_per_image"] - 20
    assert last["eval"]["uniform_bits"] == 49 * 5
    steps = step_records(finished_run)
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert steps[-1]["loss"] < steps[0]["loss"]
    # the run folder holds a prior for its VQ-VAE, a decoded sample grid and the codes
    model = vqvae.load_pretrained(tiny_vqvae)
    prior = load_prior(finished_run, model=model)
    assert prior.num_classes == 10 and prior.config.class_names[3] == "3 - three"
    assert prior.config.d_model == 32 and prior.grid == (7, 7)
    assert (finished_run / "samples" / "step_000030.png").is_file()
    assert len(list(finished_run.glob("codes-mnist-*.npz"))) == 1
    summary = json.loads((finished_run / "summary.json").read_text())
    assert not summary["interrupted"] and summary["final_eval"] == last["eval"]


class StopAt:
    """Stands in for the Ctrl-C handler: asks the loop to stop after ``n`` steps."""

    def __init__(self, n):
        self.n, self.polls = n, 0

    @property
    def requested(self):
        self.polls += 1
        return self.polls >= self.n

    def restore(self):
        pass


def test_an_interrupted_run_resumes_exactly(finished_run, tiny_vqvae, mnist_dir, tmp_path):
    out = tmp_path / "b"
    args = train_prior.parse_args(options(tiny_vqvae, mnist_dir, out))
    summary = train_prior.run(train_prior.build_config(args), stop=StopAt(13))
    assert summary["interrupted"] and summary["step"] == 13
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 13
    # as if killed after logging past its checkpoint, mid-line: the resume drops those lines
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 15, "loss": 9.0, "lr": 0.0}\n{"step": 1')

    def no_encoding(*a, **k):
        raise AssertionError("a resumed run reads its cached codes")

    original = train_prior.encode_split
    train_prior.encode_split = no_encoding
    try:
        train_prior.main(["--out", str(out), "--resume"])
    finally:
        train_prior.encode_split = original
    a, b = step_records(finished_run), step_records(out)
    assert [r["step"] for r in b] == list(range(1, 31))
    for ra, rb in zip(a, b, strict=True):
        assert (ra["loss"], ra["lr"]) == (rb["loss"], rb["lr"]), f"step {ra['step']} differs"
    wa = load_file(finished_run / PRIOR_WEIGHTS)
    wb = load_file(out / PRIOR_WEIGHTS)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # resuming a finished run changes nothing
    before = (out / "metrics.jsonl").read_text()
    train_prior.main(["--out", str(out), "--resume"])
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_to_resume_from(tiny_vqvae, mnist_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.prior", *options(tiny_vqvae, mnist_dir, out, 100_000)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "metrics.jsonl").is_file() and len(step_records(out)) >= 5:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT: saving a checkpoint" in err and "python -m train.prior --out" in err
    stopped_at = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert stopped_at >= 5 and step_records(out)[-1]["step"] == stopped_at
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    assert load_prior(out).num_classes == 10


# Runs the prior's CLI unchanged under torchrun, then dumps the rank's prior and how many
# splits it encoded: rank 1 writes no files of its own.
DDP_WORKER = textwrap.dedent("""
    import os, sys
    import torch
    from safetensors.torch import save_file
    from train import prior as train_prior

    torch.set_num_threads(1)
    priors, encoded = [], []
    init = train_prior.CodePrior.__init__
    def recording_init(self, config):
        init(self, config)
        priors.append(self)
    train_prior.CodePrior.__init__ = recording_init
    encode = train_prior.encode_split
    def counting_encode(*args, **kw):
        encoded.append(1)
        return encode(*args, **kw)
    train_prior.encode_split = counting_encode
    code = 0
    try:
        train_prior.main(sys.argv[2:])
    except SystemExit as e:
        code = e.code
    rank = os.environ["RANK"]
    (prior,) = priors
    state = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    save_file(state, os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
    with open(os.path.join(sys.argv[1], f"encoded{rank}.txt"), "w") as f:
        f.write(str(len(encoded)))
    sys.exit(code)
""")


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(tiny_vqvae, mnist_dir, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    dumps, out = tmp_path / "dumps", tmp_path / "run"
    dumps.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(worker), str(dumps),
        *options(tiny_vqvae, mnist_dir, out, steps=12),
        "--batch-size", "16", "--ckpt-every", "5", "--sample-every", "6",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # rank 0 encoded the splits into the run's cache; rank 1 read that cache
    assert [(dumps / f"encoded{r}.txt").read_text() for r in (0, 1)] == ["2", "0"]
    r0, r1 = load_file(dumps / "rank0.safetensors"), load_file(dumps / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # what rank 0 saved is that same state, and it is a trained prior of the VQ-VAE
    saved = load_file(out / PRIOR_WEIGHTS)
    assert saved.keys() == r0.keys() and all(torch.equal(saved[k], r0[k]) for k in r0)
    assert load_prior(out).num_classes == 10

    # one writer: every step logged once, the untrained and the final evaluation once each
    assert [r["step"] for r in step_records(out)] == list(range(1, 13))
    evals = [r for r in records(out) if "eval" in r]
    assert [(r["step"], bool(r.get("final"))) for r in evals] == [(0, False), (12, True)]
    assert evals[-1]["eval"]["num_images"] == 128
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 12
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step_000006.png", "step_000012.png"
    ]  # fmt: skip
    assert json.loads((out / "train_config.json").read_text())["world_size"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and not summary["interrupted"]


def test_export_writes_the_prior_beside_its_model(finished_run, tiny_vqvae, tmp_path):
    root = tmp_path / "pretrained"
    shutil.copytree(tiny_vqvae, root / "tiny")
    train_prior.main(["export", str(finished_run), "--name", "tiny", "--out-root", str(root)])
    folder = root / "tiny"
    assert {PRIOR_WEIGHTS, PRIOR_CONFIG, "prior_metrics.json"} <= {p.name for p in folder.iterdir()}
    model = vqvae.load_pretrained(folder)
    prior = load_prior(folder, model=model)
    metrics = json.loads((folder / "prior_metrics.json").read_text())
    final = [r for r in records(finished_run) if r.get("final")][-1]["eval"]
    assert metrics["bits_per_image"] == pytest.approx(final["bits_per_image"], rel=1e-6)
    assert metrics["num_images"] == 128 and metrics["ratio_to_unigram"] > 0
    train_prior.main(["export", str(finished_run), "--name", "tiny", "--out-root", str(root)])
    card = (folder / "README.md").read_text()
    assert card.startswith("# VQ-VAE `tiny`") and card.count("## Prior") == 1
    assert f"**{metrics['bits_per_image']:.1f}**" in card
    assert prior.nll_bits(torch.zeros(1, 7, 7, dtype=torch.long)).shape == (1,)


def test_export_refuses_another_model(finished_run, tmp_path, tiny_config, capsys):
    root = tmp_path / "pretrained"
    torch.manual_seed(7)
    vqvae.VQVAE(tiny_config).save_pretrained(root / "other")
    with pytest.raises(SystemExit) as e:
        train_prior.main(["export", str(finished_run), "--name", "other", "--out-root", str(root)])
    assert e.value.code == 2
    assert "belongs to 'tiny'" in capsys.readouterr().err
    assert not (root / "other" / PRIOR_WEIGHTS).exists()


def test_bad_options_are_one_clear_message(finished_run, tiny_vqvae, mnist_dir, tmp_path, capsys):
    def error(argv) -> str:
        with pytest.raises(SystemExit) as e:
            train_prior.main(argv)
        assert e.value.code == 2
        return capsys.readouterr().err

    before = (finished_run / "metrics.jsonl").read_text()
    assert "--resume" in error(options(tiny_vqvae, mnist_dir, finished_run))
    assert (finished_run / "metrics.jsonl").read_text() == before
    assert "not a run folder" in error(["--out", str(tmp_path / "nothing"), "--resume"])
    no_dataset = [a for a in options(tiny_vqvae, mnist_dir, tmp_path / "x") if a != "mnist"]
    no_dataset.remove("--dataset")
    assert "pass --dataset" in error(no_dataset)
    assert "label-dropout" in error([*options(tiny_vqvae, mnist_dir, tmp_path / "y"),
                                     "--label-dropout", "1.5"])  # fmt: skip
    assert "mnist" in error([*options(tiny_vqvae, tmp_path, tmp_path / "z")])  # no data there


def test_every_option_is_a_flag_with_help(tiny_vqvae, mnist_dir, tmp_path):
    help_text = train_prior.make_parser().format_help()
    for f in dataclasses.fields(train_prior.PriorTrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
        assert f.metadata["help"], f.name
    argv = [*options(tiny_vqvae, mnist_dir, tmp_path / "r"), "--grad-clip", "0.5",
            "--min-lr-ratio", "0.2", "--no-conditional"]  # fmt: skip
    cfg = train_prior.build_config(train_prior.parse_args(argv))
    assert (cfg.grad_clip, cfg.min_lr_ratio, cfg.conditional) == (0.5, 0.2, False)


def test_resume_refuses_options_it_would_change(finished_run, capsys):
    before = (finished_run / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as e:
        train_prior.main(["--out", str(finished_run), "--resume", "--d-model", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot change --d-model 64 (the run has 32)" in err and "--steps" in err
    # the run's own value is no change: the finished run has nothing to do
    train_prior.main(["--out", str(finished_run), "--resume", "--d-model", "32"])
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_labels_come_in_the_order_of_the_images(mnist_dir, mnist_small, tmp_path):
    labels, names = load_labels("mnist", mnist_dir, "test")
    assert torch.equal(labels, mnist_small.test_labels) and len(names) == 10
    # a folder dataset: labels from its class subfolders, in the order the images load
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), value).save(tmp_path / "test" / cls / f"{i}.png")
    images, _ = load_uint8("folder", tmp_path, "test", image_size=8, channels=1)
    labels, names = load_labels("folder", tmp_path, "test")
    assert names == ["cat", "dog"] and labels.tolist() == [0, 0, 1, 1]
    assert images[:, 0, 0, 0].tolist() == [0, 0, 255, 255]


@pytest.mark.slow
def test_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "train.prior", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--vqvae" in out.stdout and "export" in out.stdout


def test_the_benchmark_measures_a_trained_prior(finished_run, tiny_vqvae, mnist_dir, tmp_path):
    from benchmarks import prior as bench

    out = tmp_path / "figures.json"
    result = bench.main([
        "--model", str(tiny_vqvae), "--prior", str(finished_run), "--dataset", "mnist",
        "--data-dir", str(mnist_dir), "--samples", "20", "--classifier-epochs", "3",
        "--codes-cache", str(tmp_path / "codes"), "--out", str(out),
    ])  # fmt: skip
    assert json.loads(out.read_text()) == result
    final = [r for r in records(finished_run) if r.get("final")][-1]["eval"]
    nll = result["nll"]
    assert nll["bits_per_image"] == pytest.approx(final["bits_per_image"], rel=1e-6)
    assert nll["ratio_to_unigram"] == pytest.approx(nll["bits_per_image"] / nll["unigram_bits"])
    cc = result["class_consistency"]
    assert cc["samples"] == 20 and len(cc["per_class"]) == 10 and 0 <= cc["accuracy"] <= 1
    assert result["classifier_test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert result["speed"]["n"] == 16 and result["speed"]["seconds"] > 0
