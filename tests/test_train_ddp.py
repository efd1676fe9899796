"""``torchrun --nproc_per_node=2 -m train`` on CPU (gloo): the run completes, rank 0 reads the
data before the others, only rank 0 writes, and both ranks end with the same weights and
codebook."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_train import REPO, TINY, step_records

from tools.ports import free_port

# Runs the training CLI unchanged, then dumps the rank's final model state: rank 1 writes no
# files of its own, so this is the only way to see its codebook.
WORKER = textwrap.dedent("""
    import os, sys, time
    import torch
    from safetensors.torch import save_file
    import vqvae
    from train import train

    torch.set_num_threads(1)
    models = []
    init = vqvae.VQVAE.__init__
    def recording_init(self, config):
        init(self, config)
        models.append(self)
    vqvae.VQVAE.__init__ = recording_init
    # when each rank reads the data; rank 0 is slow (as when it unpacks an archive)
    load = train.load_uint8
    def timed_load(*args, **kw):
        start = time.time()
        if os.environ["RANK"] == "0":
            time.sleep(0.5)
        result = load(*args, **kw)
        with open(os.path.join(sys.argv[1], f"load{os.environ['RANK']}.txt"), "a") as f:
            f.write(f"{start} {time.time()}\\n")
        return result
    train.load_uint8 = timed_load
    code = 0
    try:
        train.main(sys.argv[2:])
    except SystemExit as e:
        code = e.code
    (model,) = models
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.safetensors"))
    sys.exit(code)
""")


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(tmp_path, mnist_dir):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    dumps, out = tmp_path / "dumps", tmp_path / "run"
    dumps.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        str(dumps),
        "--preset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(out),
        *TINY,
        "--pretrain-steps",
        "4",
        "--steps",
        "8",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--limit-train",
        "128",
        "--limit-test",
        "32",
        "--kmeans-images",
        "64",
        "--dead-code-threshold",
        "2",
        "--log-every",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # rank 0 prepared the data (train and test split) before rank 1 began to read it
    loads = [
        [
            tuple(map(float, line.split()))
            for line in (dumps / f"load{r}.txt").read_text().split("\n")
            if line
        ]
        for r in (0, 1)
    ]
    assert len(loads[0]) == len(loads[1]) == 2
    assert min(start for start, _ in loads[1]) >= max(end for _, end in loads[0])

    r0, r1 = load_file(dumps / "rank0.safetensors"), load_file(dumps / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for key in r0:  # encoder, decoder, codebook and the quantizer's EMA and restart state
        assert torch.equal(r0[key], r1[key]), key
    codebook = r0["quantizer.embedding"]
    assert codebook.shape == (32, 8) and torch.isfinite(codebook).all()
    # what rank 0 saved is that same state
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[k], r0[k]) for k in r0)

    # one writer: every step logged once, one k-means event, one final eval
    assert [r["step"] for r in step_records(out)] == list(range(1, 13))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "kmeans_init" for r in lines) == 1
    assert sum(bool(r.get("final")) for r in lines) == 1
    assert json.loads((out / "train_config.json").read_text())["world_size"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and not summary["interrupted"]
