"""Training speed: milliseconds per step and images/s for each preset's network, the full VQ step
against the bare autoencoder step of the same network (``quantize=False``: what the quantizer
costs), eager and compiled; and, given a run folder, the wall time its periodic test
evaluation took to reach a PSNR target.

    python -m benchmarks.speed                                   # step times on this machine
    python -m benchmarks.speed --quick --no-compile              # a tiny network, in seconds
    python -m benchmarks.speed --run runs/cifar10 --target 24.5  # + time to 24.5 dB

Step = ``train.train.train_step``: forward + loss, backward, gradient clipping, AdamW (fused on
CUDA), on a fixed batch after warm-up; on CUDA with bf16 autocast and channels_last, as
``python -m train`` runs it. Compiled = ``--compile``'s step: torch.compile of forward + loss,
with CUDA graphs on CUDA.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vqvae
from train.runs import eval_records
from train.train import TrainConfig, compiled_forward, forward_loss, make_optimizer, train_step

# --quick: a network small enough to time (and compile) in seconds on a CPU
QUICK_NETWORK = dict(
    hidden_channels=32, res_channels=16, res_layers=1, embedding_dim=16, codebook_size=64
)


def step_time(
    preset: str,
    batch_size: int,
    device: str,
    *,
    peer: bool = False,
    quantize: bool = True,
    compile: bool = False,
    n: int = 10,
    warmup: int = 3,
    overrides: dict | None = None,
) -> float:
    """Seconds per training step of ``preset``'s network (our quantizer, or the peer's; or no
    quantizer with ``quantize=False``), with ``overrides`` of its config fields (e.g.
    ``hidden_channels``); ``compile`` times the step as ``--compile`` runs it."""
    cfg = vqvae.preset(preset, **(overrides or {}))
    dev = torch.device(device)
    torch.manual_seed(0)
    if peer:
        from benchmarks.peer import with_peer_quantizer

        model = with_peer_quantizer(cfg)
    else:
        model = vqvae.VQVAE(cfg)
    model = model.to(dev).train().to(memory_format=torch.channels_last)
    train_cfg = TrainConfig()
    opt = make_optimizer(model, train_cfg, dev)
    x = torch.rand(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    forward = compiled_forward(dev) if compile else forward_loss
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(n + warmup):
        if i == warmup:
            sync()
            t = time.perf_counter()
        train_step(
            model,
            opt,
            x,
            quantize=quantize,
            amp=dev.type == "cuda" and train_cfg.amp,
            grad_clip=train_cfg.grad_clip,
            forward=forward,
        )
    sync()
    return (time.perf_counter() - t) / n


def time_to_target(run: Path, target: float) -> tuple[float | None, int] | None:
    """(seconds, step) of the first test evaluation of the VQ phase at or above ``target`` dB.
    Evaluations during pre-training (the model running without quantization) do not count."""
    for r in eval_records(run):
        if r["phase"] == "vq" and r["eval"]["psnr"] >= target:
            return r.get("elapsed_s"), r["step"]
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, help="default 128 (16 with --quick)")
    p.add_argument("--presets", default="mnist,cifar10")
    p.add_argument("--steps", type=int, help="timed steps per row (default 10, 3 with --quick)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the compiled step (default on)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny network instead of the presets' ({QUICK_NETWORK})",
    )
    p.add_argument("--run", type=Path, help="a run folder to read time-to-target from")
    p.add_argument("--target", type=float, default=24.5)
    a = p.parse_args()
    batch = a.batch_size or (16 if a.quick else 128)
    steps = a.steps or (3 if a.quick else 10)
    overrides = QUICK_NETWORK if a.quick else None

    hw = (
        torch.cuda.get_device_name()
        if a.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    network = "a tiny network (--quick)" if a.quick else "the presets' networks"
    print(f"device: {a.device} ({hw}), torch {torch.__version__}, batch {batch}, {network}")
    print("| preset | step | VQ ms / step | AE ms / step | VQ / AE | VQ images / s |")
    print("|---|---|---|---|---|---|")
    for name in a.presets.split(","):
        for compiled in (False, True) if a.compile else (False,):
            kw = dict(n=steps, compile=compiled, overrides=overrides)
            try:
                vq = step_time(name, batch, a.device, quantize=True, **kw)
                ae = step_time(name, batch, a.device, quantize=False, **kw)
            except Exception as e:  # e.g. no C++ compiler for torch.compile on this machine
                if not compiled:
                    raise
                print(f"| {name} | compiled | failed: {type(e).__name__}: {e} | | | |")
                continue
            mode = "compiled" if compiled else "eager"
            print(
                f"| {name} | {mode} | {1000 * vq:.2f} | {1000 * ae:.2f} | {vq / ae:.2f} "
                f"| {batch / vq:.0f} |"
            )
    if a.run:
        hit = time_to_target(a.run, a.target)
        if hit is None:
            print(f"\n{a.run}: no VQ-phase evaluation reached {a.target} dB")
        else:
            seconds, step = hit
            took = (
                f"{seconds / 60:.1f} min"
                if seconds is not None
                else "time not recorded (the run predates metrics.jsonl's elapsed_s)"
            )
            print(f"\n{a.run}: test PSNR >= {a.target} dB after {step} steps, {took}")


if __name__ == "__main__":
    main()
