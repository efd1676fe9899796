"""Run folders: what training writes and evaluate/export read.

runs/NAME/
  config.json, model.safetensors   latest weights (vqvae.load_pretrained reads them)
  train_config.json                the training options
  checkpoint.pt                    full state for --resume (weights_only-loadable)
  checkpoint.prev.pt               the checkpoint before it: the fallback if that one is bad
  metrics.jsonl                    one JSON object per log / eval line
  summary.json                     final figures, time and hardware
  samples/step_NNNNNN.png          targets (top) vs reconstructions (bottom)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from vqvae.files import atomic_write

CHECKPOINT = "checkpoint.pt"
PREV_CHECKPOINT = "checkpoint.prev.pt"
TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"

# train_config.json keys renamed since runs were written; old run folders still read.
RENAMED_KEYS = {"model": "model_preset", "ema": "use_ema", "channels": "in_channels"}


class RunError(RuntimeError):
    """A run folder that is missing, not a run, or has a corrupt checkpoint."""


def save_checkpoint_file(state: dict, run_dir: Path) -> None:
    """Write ``state`` as the run's checkpoint.pt, keeping the one it replaces as
    checkpoint.prev.pt. Written to a temp file and synced first, so a kill or a full disk
    leaves the old checkpoint (or, between two renames, the fallback) and no temp file."""
    path, prev = Path(run_dir) / CHECKPOINT, Path(run_dir) / PREV_CHECKPOINT
    with atomic_write(path) as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # the new one is on disk before the old one moves aside
        if path.exists():
            os.replace(path, prev)


def _read_checkpoint(path: Path, map_location) -> dict:
    # weights_only: tensors, numbers and strings only, no arbitrary unpickling
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(run_dir: Path, map_location="cpu", announce: bool = True) -> dict:
    """The run's checkpoint; when checkpoint.pt is missing or unreadable (a kill between two
    renames, a disk that filled up), the previous one, saying so when ``announce``."""
    path, prev = Path(run_dir) / CHECKPOINT, Path(run_dir) / PREV_CHECKPOINT
    if not path.is_file() and not prev.is_file():
        raise RunError(
            f"{run_dir} has no {CHECKPOINT}: not a training run folder "
            f"(or the run was killed before its first checkpoint)"
        )
    problem = f"{path} is missing"
    if path.is_file():
        try:
            return _read_checkpoint(path, map_location)
        except Exception as e:
            problem = f"{path} is corrupt or unreadable ({type(e).__name__}: {e})"
    if prev.is_file():
        try:
            state = _read_checkpoint(prev, map_location)
        except Exception as e:
            problem += f", and so is {prev} ({type(e).__name__})"
        else:
            if announce:
                print(
                    f"warning: {problem}; resuming from the previous checkpoint {prev} "
                    f"(step {int(state['step'])})",
                    file=sys.stderr,
                )
            return state
    raise RunError(f"{problem}. Nothing was changed; start a new run with another --out.")


def start_or_resume(
    run_dir: Path, resume: bool, total_steps: int, announce: bool = True
) -> tuple[dict | None, dict | None]:
    """(checkpoint, summary) for a run about to start in ``run_dir``: a fresh run gets
    (None, None) and never overwrites a run by accident; a resumed one gets its checkpoint;
    a resumed run that already reached ``total_steps`` gets its summary instead, and every
    file is left as it is."""
    run_dir = Path(run_dir)
    if not resume:
        if (run_dir / CHECKPOINT).exists():
            raise RunError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose "
                f"another --out (nothing was changed)"
            )
        return None, None
    ckpt = load_checkpoint(run_dir, announce=announce)
    step = int(ckpt["step"])
    if step < total_steps:
        return ckpt, None
    if announce:
        print(
            f"{run_dir} already finished at step {step} of {total_steps}; "
            f"nothing to do (pass a larger --steps to train on)",
            file=sys.stderr,
        )
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        return ckpt, json.loads(summary_file.read_text())
    return ckpt, {"step": step, "total_steps": total_steps, "interrupted": False}


def truncate_metrics(run_dir: Path, step: int, kmeans_done: bool) -> int:
    """Drop the metrics lines that a run resumed from the checkpoint of ``step`` writes again:
    those of later steps, and the k-means line of that step if the checkpoint predates it.
    Returns how many lines were dropped (0: the file is left untouched)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)

    def replayed(line: str) -> bool:
        try:
            r = json.loads(line)
        except ValueError:  # a line cut short by the kill
            return True
        at = r.get("step", 0)
        return at > step or (at == step and r.get("event") == "kmeans_init" and not kmeans_done)

    keep = [line for line in lines if not replayed(line)]
    if len(keep) < len(lines):
        with atomic_write(path, "w") as f:
            f.writelines(keep)
    return len(lines) - len(keep)


def read_train_config(run_dir: Path) -> dict | None:
    """A run's train_config.json (with old key names mapped to today's), or None."""
    p = Path(run_dir) / TRAIN_CONFIG
    if not p.is_file():
        return None
    tc = json.loads(p.read_text())
    for old, new in RENAMED_KEYS.items():
        if old in tc and new not in tc:
            tc[new] = tc.pop(old)
    return tc


def eval_records(run_dir: Path) -> list[dict]:
    """The test-evaluation lines of a run's metrics file, in order (periodic ones, then the
    final one): each has ``step``, ``eval`` (the metrics), ``phase`` (``"pretrain"`` when
    the model ran without quantization, else ``"vq"``; inferred from train_config.json for
    runs written before eval lines carried it) and ``elapsed_s`` when recorded."""
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    pretrain = (read_train_config(run_dir) or {}).get("pretrain_steps", 0)
    records = [r for r in map(json.loads, lines) if "eval" in r]
    for r in records:
        # the eval after step s ran with quantization iff step s was a VQ step (s > pretrain)
        r.setdefault("phase", "vq" if r.get("final") or r["step"] > pretrain else "pretrain")
    return records


def is_run_dir(path: Path) -> bool:
    return (Path(path) / TRAIN_CONFIG).is_file()
