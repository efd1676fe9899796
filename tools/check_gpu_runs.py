"""Check run folders written elsewhere (the GPU runs in ../shared/gpu-runs): each one's
model-card command, as ``train.export`` writes it, rebuilds exactly the options it ran with.

    python -m tools.check_gpu_runs                        # every run in ../shared/gpu-runs
    python -m tools.check_gpu_runs ../shared/gpu-runs/mnist-wide

Prints one line per run and exits 1 if any command would rebuild another run. (A tool, not a
test: the folders are not part of the repository.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from train.export import command_config, training_command
from train.runs import is_run_dir, read_train_config

ROOT = Path(__file__).resolve().parent.parent
GPU_RUNS = ROOT.parent / "shared" / "gpu-runs"


def differences(run: Path) -> dict:
    """{option: (ran with, the card's command gives)} for the options that differ."""
    tc = read_train_config(run)
    cfg = dataclasses.asdict(command_config(training_command(tc), tc))
    return {k: (tc.get(k), v) for k, v in cfg.items() if tc.get(k) != v}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help=f"run folders (default: those in {GPU_RUNS})")
    args = p.parse_args(argv)
    runs = args.runs or sorted(d for d in GPU_RUNS.glob("*") if is_run_dir(d))
    if not runs:
        sys.exit(f"no run folders given or found in {GPU_RUNS}")
    bad = 0
    for run in runs:
        diff = differences(run)
        bad += bool(diff)
        print(f"{run.name}: {'rebuilds its run' if not diff else f'differs: {diff}'}")
        print(f"  {training_command(read_train_config(run))}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
