"""Run folders: what training writes and evaluate/export read.

runs/NAME/
  config.json, model.safetensors   latest weights (vqvae.load_pretrained reads them)
  train_config.json                the training options
  checkpoint.pt                    full state for --resume (weights_only-loadable)
  metrics.jsonl                    one JSON object per log / eval line
  summary.json                     final figures, time and hardware
  samples/step_NNNNNN.png          targets (top) vs reconstructions (bottom)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vqvae.files import atomic_write

CHECKPOINT = "checkpoint.pt"
TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"


class RunError(RuntimeError):
    """A run folder that is missing, not a run, or has a corrupt checkpoint."""


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temp file, fsync, then rename: a kill never leaves half a checkpoint."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(
            f"{run_dir} has no {CHECKPOINT}: not a training run folder "
            f"(or the run was killed before its first checkpoint)"
        )
    try:
        # weights_only: tensors, numbers and strings only, no arbitrary unpickling
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RunError(
            f"{path} is corrupt or unreadable ({type(e).__name__}: {e}). "
            f"Nothing was changed; start a new run with another --out."
        ) from e


def read_train_config(run_dir: Path) -> dict | None:
    p = Path(run_dir) / TRAIN_CONFIG
    return json.loads(p.read_text()) if p.is_file() else None


def eval_records(run_dir: Path) -> list[dict]:
    """The test-evaluation lines of a run's metrics file, in order (periodic ones, then the
    final one): each has ``step``, ``eval`` (the metrics) and ``elapsed_s`` when recorded."""
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval" in r]


def is_run_dir(path: Path) -> bool:
    return (Path(path) / TRAIN_CONFIG).is_file()
