"""Recipe ablation and peer-quantizer benchmark: prints a table per dataset.

Every row trains the same network with the same loop, budget (total steps, batch size) and
seed, then evaluates on the whole test split:

  baseline      the paper's plain VQ-VAE: codebook loss, beta=1, random init, no pre-training
  ema           + EMA codebook (decay 0.99, beta=0.25)
  ema-kmeans    + encoder pre-training and k-means init
  full          + dead-code restarts (this project's recipe)
  peer          full's loop with vector_quantize_pytorch.VectorQuantize set to match
  ema-restarts  (optional row, not run by default) ema + dead-code restarts

Also times one training step (forward + backward + optimizer) with our quantizer and with
the peer's on the same network and batch.

    python -m benchmarks.ablation --dataset mnist --data-dir ../shared/data --steps 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import vqvae
from benchmarks.speed import step_time
from train.train import RECIPES, TRAIN_PRESETS, TrainConfig, run

ROWS = ["baseline", "ema", "ema-kmeans", "full", "peer"]


def config_for(dataset: str, recipe: str, a) -> TrainConfig:
    base = dict(TRAIN_PRESETS[dataset])
    base.update(RECIPES["full" if recipe == "peer" else recipe])
    # same budget for every row: pre-training steps come out of the total
    pretrain = 0 if base["pretrain_steps"] == 0 else int(a.steps * a.pretrain_fraction)
    if recipe == "peer":
        base["kmeans"] = False  # VectorQuantize runs its own k-means on its first batch
    base.update(
        preset=dataset,
        recipe="full" if recipe == "peer" else recipe,
        data_dir=a.data_dir,
        out=str(Path(a.runs) / f"{dataset}-{recipe}"),
        steps=a.steps - pretrain,
        pretrain_steps=pretrain,
        batch_size=a.batch_size,
        seed=a.seed,
        device=a.device,
        log_every=50,
        eval_every=10**9,
        ckpt_every=10**9,
        sample_every=10**9,
        limit_test=a.limit_test,
    )
    base.setdefault("dead_code_threshold", vqvae.preset(base["model_preset"]).dead_code_threshold)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in base.items() if k in fields})


def add_budget_args(p: argparse.ArgumentParser, steps: int) -> None:
    """The options every row shares (what :func:`config_for` reads), for each benchmark script."""
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "cifar10"])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=steps, help="total steps per row (all phases)")
    p.add_argument("--pretrain-fraction", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--json", help="write results here")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_budget_args(p, steps=1000)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS}")
    a = p.parse_args()

    results = []
    for row in a.rows.split(","):
        cfg = config_for(a.dataset, row, a)
        out = Path(cfg.out)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        build = None
        if row == "peer":
            from benchmarks.peer import with_peer_quantizer

            build = with_peer_quantizer
        t = time.time()
        summary = run(cfg, build_model=build)
        ev = summary["final_eval"]
        results.append(
            dict(
                row=row,
                psnr=ev["psnr"],
                ssim=ev["ssim"],
                codes_used=ev["codes_used"],
                codes_used_fraction=ev["codes_used_fraction"],
                perplexity=ev["perplexity"],
                wall_s=round(time.time() - t, 1),
                pretrain_steps=cfg.pretrain_steps,
                vq_steps=cfg.steps,
            )
        )
    model_preset = TRAIN_PRESETS[a.dataset]["model_preset"]
    ours = step_time(model_preset, a.batch_size, a.device)
    peer = step_time(model_preset, a.batch_size, a.device, peer=True)

    K = vqvae.preset(TRAIN_PRESETS[a.dataset]["model_preset"]).codebook_size
    print(
        f"\n{a.dataset}: {a.steps} steps per row, batch {a.batch_size}, seed {a.seed}, "
        f"device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| recipe | PSNR (dB) | SSIM | codes used | perplexity | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['row']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['codes_used']}/{K} "
            f"({100 * r['codes_used_fraction']:.1f} %) | {r['perplexity']:.1f} "
            f"| {r['wall_s']:.0f} |"
        )
    print(
        f"\ntraining step (batch {a.batch_size}): ours {1000 * ours:.1f} ms, "
        f"vector_quantize_pytorch {1000 * peer:.1f} ms, ratio peer/ours {peer / ours:.2f}"
    )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps(
                dict(
                    dataset=a.dataset,
                    steps=a.steps,
                    batch_size=a.batch_size,
                    seed=a.seed,
                    device=a.device,
                    rows=results,
                    step_ms_ours=1000 * ours,
                    step_ms_peer=1000 * peer,
                ),
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
