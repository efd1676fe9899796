"""Network size at a fixed budget: which change to the preset's network buys quality?

Every row trains the full recipe (pre-training, k-means init, EMA codebook, dead-code
restarts) with the same loop, budget, batch and seed as ``ablation.py``; only the network
changes. K and the code grid stay fixed, so every row spends the same bits per image.

  preset   the preset's network as vqvae.config defines it today (hidden 256, 2 residual
           layers of 64 channels, D=64; it was hidden 128 / residual 32 when the tables in
           BENCHMARKS.md were measured, so there "wide" is the row that is now the preset)
  wide     hidden 256, residual channels 64
  deep     4 residual layers
  d16      code vectors of 16 dimensions instead of 64
  d8       code vectors of 8 dimensions

    python -m benchmarks.capacity --dataset mnist --data-dir ../shared/data --steps 5000

Rows can run in separate processes (``--rows wide --json a.json`` and ``--rows preset,d16
--json b.json``); ``--merge a.json b.json`` prints one table from their results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import vqvae
from benchmarks.ablation import add_budget_args, config_for
from benchmarks.speed import step_time
from train.runs import eval_records
from train.train import TRAIN_PRESETS, run

ROWS: dict[str, dict] = {
    "preset": {},
    "wide": dict(hidden_channels=256, res_channels=64),
    "deep": dict(res_layers=4),
    "d16": dict(embedding_dim=16),
    "d8": dict(embedding_dim=8),
}


def run_row(row: str, a) -> dict:
    overrides = ROWS[row]
    cfg = config_for(a.dataset, "full", a)
    cfg = dataclasses.replace(
        cfg,
        out=str(Path(a.runs) / f"capacity-{a.dataset}-{row}"),
        eval_every=a.eval_every,
        eval_images=2000,
        **overrides,
    )
    if Path(cfg.out).exists():
        shutil.rmtree(cfg.out)
    model_name = TRAIN_PRESETS[a.dataset]["model_preset"]
    params = sum(p.numel() for p in vqvae.VQVAE(vqvae.preset(model_name, **overrides)).parameters())
    t = time.time()
    ev = run(cfg)["final_eval"]
    curve = [(r["step"], round(r["eval"]["psnr"], 2)) for r in eval_records(cfg.out)]
    return dict(
        row=row,
        overrides=overrides,
        params=params,
        psnr=ev["psnr"],
        ssim=ev["ssim"],
        codes_used=ev["codes_used"],
        codes_used_fraction=ev["codes_used_fraction"],
        perplexity=ev["perplexity"],
        wall_s=round(time.time() - t, 1),
        step_ms=1000 * step_time(model_name, a.batch_size, a.device, overrides=overrides),
        curve=curve,
        threads=torch.get_num_threads(),
    )


def print_table(report: dict) -> None:
    K = report["codebook_size"]
    print(
        f"\n{report['dataset']}: full recipe, {report['steps']} steps per row, batch "
        f"{report['batch_size']}, seed {report['seed']}, device {report['device']}, "
        f"torch {report['torch']}"
    )
    print("| network | parameters | PSNR (dB) | SSIM | codes used | perplexity | ms / step |")
    print("|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        change = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "as the preset"
        print(
            f"| {r['row']} ({change}) | {r['params'] / 1e6:.2f} M | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['codes_used']}/{K} ({100 * r['codes_used_fraction']:.1f} %) | "
            f"{r['perplexity']:.1f} | {r['step_ms']:.0f} |"
        )
    print("\ntest PSNR along the way (first 2000 test images; the last point is the whole split):")
    for r in report["rows"]:
        print(f"  {r['row']}: " + ", ".join(f"{s}: {p}" for s, p in r["curve"]))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_budget_args(p, steps=5000)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument(
        "--merge", nargs="+", metavar="JSON", help="print one table from earlier --json files"
    )
    a = p.parse_args()

    if a.merge:
        reports = [json.loads(Path(f).read_text()) for f in a.merge]
        keys = ("dataset", "steps", "batch_size", "seed")
        if len({tuple(r[k] for k in keys) for r in reports}) > 1:
            sys.exit("error: the files were run with different datasets, budgets or seeds")
        print_table({**reports[0], "rows": [row for r in reports for row in r["rows"]]})
        return
    unknown = [r for r in a.rows.split(",") if r not in ROWS]
    if unknown:
        sys.exit(f"error: unknown rows {unknown}; choose from {list(ROWS)}")
    report = dict(
        dataset=a.dataset,
        steps=a.steps,
        batch_size=a.batch_size,
        seed=a.seed,
        device=a.device,
        torch=torch.__version__,
        codebook_size=vqvae.preset(TRAIN_PRESETS[a.dataset]["model_preset"]).codebook_size,
        rows=[run_row(row, a) for row in a.rows.split(",")],
    )
    print_table(report)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
