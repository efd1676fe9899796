"""The training loop of both trainers: ``python -m train`` (the VQ-VAE) and ``python -m
train.prior`` (a prior over its codes).

A trainer's state is a ``Run``: a dataclass that supplies what differs between the two (one
optimisation step, its metrics line, its evaluation, its sample grid, its part of the
checkpoint). The rest is here, and ``train_loop`` reads top to bottom: the learning-rate schedule,
the log / eval / sample / checkpoint steps, Ctrl-C and the ranks' agreement to stop; then
``finish`` writes the summary. Under ``torchrun`` (DDP) every rank trains and only rank 0
writes.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from vqvae.data import DatasetNotFoundError
from vqvae.files import write_json_atomic

from .options import TrainError
from .runs import METRICS, TRAIN_CONFIG, RunError, save_checkpoint_file, truncate_metrics


# ----------------------------------------------------------------------------- machinery
def setup_distributed():
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(
                "--device cuda was asked for but CUDA is not available; use --device cpu"
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


def hardware(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    threads = torch.get_num_threads()
    return f"CPU ({os.cpu_count()} cores, {platform.machine()}, {threads} torch threads)"


def lr_at(cfg, step: int) -> float:
    """Linear warm-up then cosine decay over all ``cfg.total_steps`` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    )


def ddp(module: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel (under torchrun)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)


def first_on_rank_0(load, rank: int, world: int):
    """``load()`` on every rank, rank 0 first: it may prepare what the others then read (unpack
    an archive, encode a cache), and the others wait for it and learn whether it failed."""
    if world == 1:
        return load()
    problem, data = [None], None
    if rank == 0:
        try:
            data = load()
        except Exception as e:
            problem = [f"{type(e).__name__}: {e}"]
            raise
        finally:  # doubles as the barrier; the others learn whether rank 0 succeeded
            dist.broadcast_object_list(problem, src=0)
        return data
    dist.broadcast_object_list(problem, src=0)
    if problem[0] is not None:
        raise TrainError(f"rank 0 could not load the data: {problem[0]}")
    return load()


class Epochs:
    """Real epochs over ``n`` shuffled items: the order is a function of (seed, epoch) alone,
    so a resumed run sees exactly the batches it would have seen. Each rank takes its slice
    of every global batch: ``indices(step)`` are this rank's items of step ``step``."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, device,
                 what: str = "training images"):  # fmt: skip
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.device = device
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise TrainError(
                f"{n} {what} are fewer than one batch of {batch_size * world}; lower --batch-size"
            )
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._epoch = epoch
        start = (pos * self.world + self.rank) * self.bs
        return self._perm[start : start + self.bs]


class StopFlag:
    """First Ctrl-C / SIGTERM asks the loop to save and stop at the next step boundary;
    a second Ctrl-C stops at once (the last periodic checkpoint stays intact)."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not in the main thread (e.g. called from a test thread)
            pass

    def restore(self) -> None:
        """Put the caller's handlers back (a notebook's Ctrl-C works again after training)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint and stopping "
            f"(Ctrl-C again to stop without saving)",
            file=sys.stderr,
            flush=True,
        )


# ----------------------------------------------------------------------------- run state
@dataclass
class Run:
    """What the loop shares with a trainer: options, optimizer, device, rank, where the run
    is, and its files (rank 0 only). A trainer subclasses it with its model and data, and
    supplies the methods below the fields."""

    prog: ClassVar[str]  # the command, for messages: "train" or "train.prior"
    # the attribute holding the module trained (its weights are checked, checkpointed under
    # this key and saved with save_pretrained): "model" or "prior"
    weights: ClassVar[str]

    cfg: Any  # the trainer's options (out, total_steps, the schedule, *_every)
    opt: torch.optim.Optimizer
    dev: torch.device
    rank: int
    world: int
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this process started
    saved_step: int = -1  # step of the newest checkpoint this process wrote
    started: float = field(default_factory=time.time)
    log: IO | None = None  # metrics.jsonl
    writer: Any = None  # tensorboard SummaryWriter, when the trainer uses one
    window: tuple[int, float] | None = None  # (step, time) of the last log line
    bar: Any = None  # the tqdm progress bar while the loop runs

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def seconds(self) -> float:
        """Training time so far, over every process that worked on this run."""
        return self.elapsed + time.time() - self.started

    # what a trainer supplies
    def take_step(self) -> Any:
        """One optimisation step at ``self.step`` (the learning rate is set); returns what
        ``log_step`` reads."""
        raise NotImplementedError

    def log_step(self, out) -> None:
        """The step's metrics line (``emit``) from ``take_step``'s ``out``."""
        raise NotImplementedError

    def evaluate(self, final: bool = False) -> dict:
        """Test metrics (all the test split when ``final``), written by ``emit_eval``."""
        raise NotImplementedError

    def save_samples(self) -> None:
        """samples/step_NNNNNN.png (``sample_path``)."""
        raise NotImplementedError

    def checkpoint(self) -> dict:
        """What else a resume needs, besides the weights, optimizer, step and RNG."""
        return {}

    def load(self, ckpt: dict) -> None:
        """Take ``checkpoint()``'s part back from a checkpoint."""

    def report(self, summary: dict) -> str:
        """The line printed when the run completes."""
        raise NotImplementedError


def emit(run: Run, record: dict) -> None:
    """One line of metrics.jsonl, stamped with elapsed_s (if it has none), and tensorboard
    scalars; rank 0 only (the other ranks have no log)."""
    record.setdefault("elapsed_s", round(run.seconds(), 2))
    if run.log is not None:
        run.log.write(json.dumps(record) + "\n")
        run.log.flush()
    if run.writer is not None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and k not in ("step", "elapsed_s"):
                run.writer.add_scalar(k, v, record["step"])


def finite(run: Run, loss: float) -> float:
    """``loss``, or the end of the run if it is NaN/inf (the last checkpoint is kept)."""
    if not math.isfinite(loss):
        raise TrainError(
            f"loss became {loss} at step {run.step}; the last good checkpoint "
            f"in {run.out} is kept. Try a lower --lr or --grad-clip."
        )
    return loss


def per_second(run: Run, items_per_step: int) -> float | None:
    """Items (images, grids) a second over all ranks since the last log line; None on a
    process's first line, whose time includes the start-up."""
    now, last = time.time(), run.window
    run.window = (run.step, now)
    if last is None:
        return None
    return (run.step - last[0]) * items_per_step * run.world / max(now - last[1], 1e-9)


def emit_eval(run: Run, ev: dict, final: bool, **fields) -> None:
    record = {"step": run.step, **fields, "eval": ev}
    emit(run, {**record, "final": True} if final else record)


def sample_path(run: Run) -> Path:
    return run.out / "samples" / f"step_{run.step:06d}.png"


def stop_agreed(run: Run, stop) -> bool:
    """Whether to stop after this step (``stop.requested`` is read once a step). Under DDP
    every rank must stop at the same step: they agree at log steps only (a collective every
    step would stall the GPU)."""
    requested = stop.requested
    if run.world == 1:
        return requested
    if run.step % run.cfg.log_every:
        return False
    flag = torch.tensor([float(requested)], device=run.dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def save_checkpoint(run: Run) -> None:
    """checkpoint.pt (everything --resume needs; the one before it is kept as the fallback)
    and the latest weights (the trained module's ``save_pretrained``)."""
    # checked on every rank: DDP keeps the weights equal, so all ranks stop together
    # instead of the others waiting in a collective for rank 0
    module = getattr(run, run.weights)
    bad = [
        n
        for n, p in module.state_dict().items()
        if p.is_floating_point() and not torch.isfinite(p).all()
    ]
    if bad:
        raise TrainError(
            f"weights became NaN/inf at step {run.step} ({bad[0]}); the last good "
            f"checkpoint in {run.out} is kept. Try a lower --lr."
        )
    if not run.main:
        return
    dev = run.dev
    checkpoint = {
        run.weights: {k: v.detach().cpu() for k, v in module.state_dict().items()},
        **run.checkpoint(),
        "optimizer": run.opt.state_dict(),
        "step": run.step,
        "elapsed": run.seconds(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "train_config": json.dumps(dataclasses.asdict(run.cfg)),
    }
    try:
        save_checkpoint_file(checkpoint, run.out)
        module.save_pretrained(run.out)
        run.saved_step = run.step
    except OSError as e:
        raise TrainError(
            f"could not save the checkpoint of step {run.step} in {run.out}: "
            f"{e.strerror or e}. The previous checkpoint is kept; make room and continue "
            f"with: python -m {run.prog} --out {run.out} --resume"
        ) from e


def restore(run: Run, ckpt: dict) -> None:
    """Continue where ``ckpt`` (save_checkpoint's) left off: weights, optimizer, step, time
    and the RNG, so the run goes on bit for bit."""
    getattr(run, run.weights).load_state_dict(ckpt[run.weights])
    run.load(ckpt)
    run.opt.load_state_dict(ckpt["optimizer"])
    run.step, run.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if run.dev.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], run.dev)
    if run.main:  # a killed run logged past its checkpoint: those lines come again
        truncate_metrics(run.out, run.step, ckpt.get("kmeans_done", True))


def open_logs(run: Run, info: dict, tensorboard: bool = False) -> None:
    """Rank 0: the options and ``info`` (train_config.json), metrics.jsonl and, when asked
    for and installed, tensorboard."""
    out = run.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / TRAIN_CONFIG, {**dataclasses.asdict(run.cfg), **info}, indent=2)
    run.log = open(out / METRICS, "a")
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional
            run.writer = None


# ----------------------------------------------------------------------------- the loop
def train_loop(run: Run, stop=None, desc: str = "") -> None:
    """Train from ``run.step`` to ``cfg.total_steps``. ``stop`` replaces the Ctrl-C handler
    (an object with ``.requested``, read once a step, and ``.restore()``)."""
    cfg = run.cfg
    stop = stop or StopFlag()
    run.bar = tqdm(total=cfg.total_steps, initial=run.step, disable=not run.main,
                   dynamic_ncols=True, desc=desc)  # fmt: skip
    run.started = time.time()
    run.window = None
    try:
        while run.step < cfg.total_steps:
            for group in run.opt.param_groups:
                group["lr"] = lr_at(cfg, run.step)
            out = run.take_step()
            run.step += 1
            step = run.step
            run.bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.total_steps:
                run.log_step(out)
            if run.main and step % cfg.eval_every == 0 and step < cfg.total_steps:
                run.evaluate()
            if run.main and step % cfg.sample_every == 0 and step < cfg.total_steps:
                run.save_samples()  # the last step's come in finish()
            stopping = stop_agreed(run, stop)
            if step % cfg.ckpt_every == 0 or stopping:
                save_checkpoint(run)
            if stopping:
                break
    finally:
        run.bar.close()
        stop.restore()


def finish(run: Run, data_source: str, **extra) -> dict:
    """The last checkpoint, samples and full test evaluation of a completed run; the summary
    (also of an interrupted one), with ``extra`` before its final_eval."""
    cfg, out = run.cfg, run.out
    interrupted = run.step < cfg.total_steps
    final_eval = None
    if not interrupted:
        if run.saved_step != run.step:  # the checkpoint before it stays the fallback
            save_checkpoint(run)
        if run.main:
            run.save_samples()
            final_eval = run.evaluate(final=True)
    summary = {
        "step": run.step,
        "total_steps": cfg.total_steps,
        "interrupted": interrupted,
        "elapsed_s": round(run.seconds(), 1),
        "device": str(run.dev),
        "hardware": hardware(run.dev),
        "world_size": run.world,
        "data_source": data_source,
        "torch": torch.__version__,
        **extra,
        "final_eval": final_eval,
    }
    if run.main:
        write_json_atomic(out / "summary.json", summary, indent=2)
        run.log.close()
        if run.writer is not None:
            run.writer.close()
        if interrupted:
            print(
                f"stopped at step {run.step}; checkpoint saved. Continue with: "
                f"python -m {run.prog} --out {out} --resume",
                file=sys.stderr,
            )
        else:
            print(run.report(summary))
    if run.world > 1:
        dist.barrier()
    return summary


def cli(prog: str, out: str, train) -> None:
    """Run ``train()`` (which returns the summary) as a command: a user's mistake is one
    message and exit code 2, a full disk says how to continue, an interrupted run exits 130."""
    try:
        summary = train()
    except (TrainError, RunError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(
            f"error: no space left on the disk while writing {e.filename or out}; make room "
            f"and continue with: python -m {prog} --out {out} --resume",
            file=sys.stderr,
        )
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary["interrupted"]:
        sys.exit(130)
