"""Training speed: milliseconds per step and images/s for each preset's network, and, given a
run folder, the wall time its periodic test evaluation took to reach a PSNR target.

    python -m benchmarks.speed                                   # step times on this machine
    python -m benchmarks.speed --run runs/cifar10 --target 24.5  # + time to 24.5 dB

Step = forward + backward + AdamW step on a fixed batch, after warm-up; on CUDA with bf16
autocast and channels_last, as `python -m train` runs it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vqvae
from train.runs import eval_records


def step_time(
    preset: str,
    batch_size: int,
    device: str,
    *,
    peer: bool = False,
    n: int = 10,
    warmup: int = 3,
    overrides: dict | None = None,
) -> float:
    """Seconds per training step of ``preset``'s network (our quantizer, or the peer's),
    with ``overrides`` of its config fields (e.g. ``hidden_channels``)."""
    cfg = vqvae.preset(preset, **(overrides or {}))
    torch.manual_seed(0)
    if peer:
        from peer import with_peer_quantizer

        model = with_peer_quantizer(cfg)
    else:
        model = vqvae.VQVAE(cfg)
    model = model.to(device).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for i in range(n + warmup):
        if i == warmup:
            sync()
            t = time.perf_counter()
        with amp:
            o = model(x)
        opt.zero_grad(set_to_none=True)
        o.loss.backward()
        opt.step()
    sync()
    return (time.perf_counter() - t) / n


def time_to_target(run: Path, target: float) -> tuple[float, int] | None:
    """(seconds, step) of the first periodic test evaluation at or above ``target`` dB."""
    for r in eval_records(run):
        if r["eval"]["psnr"] >= target:
            return r.get("elapsed_s"), r["step"]
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--presets", default="mnist,cifar10")
    p.add_argument("--steps", type=int, default=10, help="timed steps per preset")
    p.add_argument("--run", type=Path, help="a run folder to read time-to-target from")
    p.add_argument("--target", type=float, default=24.5)
    a = p.parse_args()

    hw = (
        torch.cuda.get_device_name()
        if a.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    print(f"device: {a.device} ({hw}), torch {torch.__version__}, batch {a.batch_size}")
    print("| preset | ms / step | images / s |")
    print("|---|---|---|")
    for name in a.presets.split(","):
        s = step_time(name, a.batch_size, a.device, n=a.steps)
        print(f"| {name} | {1000 * s:.1f} | {a.batch_size / s:.0f} |")
    if a.run:
        hit = time_to_target(a.run, a.target)
        if hit is None:
            print(f"\n{a.run}: no periodic evaluation reached {a.target} dB")
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
