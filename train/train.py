"""python -m train: (1) pre-train encoder+decoder without quantization, (2) k-means init of the
codebook on encoder outputs, (3) VQ training with EMA codebook and dead-code restarts.

Reads top to bottom: options -> data -> model -> one training step -> the loop. Every phase
can be switched off: the plain VQ-VAE of the paper is ``--recipe baseline`` (codebook loss,
beta=1, random init, no pre-training). Runs on CUDA (bf16 autocast, data resident on the GPU,
channels_last, fused AdamW, optional torch.compile with CUDA graphs), on CPU, and on several
GPUs with ``torchrun --nproc_per_node=N -m train ...`` (DDP; only rank 0 writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import platform
import signal
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist

import vqvae
from vqvae.data import DATASETS, DataInfo, DatasetNotFoundError, load_uint8, spread
from vqvae.files import write_json_atomic
from vqvae.metrics import psnr

from .evaluate import evaluate
from .runs import (
    METRICS,
    TRAIN_CONFIG,
    RunClock,
    RunError,
    read_train_config,
    save_checkpoint_file,
    start_or_resume,
    truncate_metrics,
)


class TrainError(RuntimeError):
    """A problem with the user's options or the run (printed as one clear message)."""


# Training presets: which data, which model preset, and a default budget. The shipped mnist,
# fashion-mnist and cifar10 models were trained to these budgets (see their model cards).
# Flags override any of these.
TRAIN_PRESETS: dict[str, dict] = {
    "mnist": dict(
        dataset="mnist",
        model_preset="mnist",
        steps=20_000,
        pretrain_steps=1_000,
        batch_size=128,
        lr=3e-4,
    ),
    "fashion-mnist": dict(
        dataset="fashion-mnist",
        model_preset="fashion-mnist",
        steps=20_000,
        pretrain_steps=1_000,
        batch_size=128,
        lr=3e-4,
    ),
    "cifar10": dict(
        dataset="cifar10",
        model_preset="cifar10",
        steps=60_000,
        pretrain_steps=2_000,
        batch_size=128,
        lr=3e-4,
    ),
    # your own images: root/train/<class>/*.png and root/test/<class>/*.png
    "folder": dict(
        dataset="folder",
        model_preset="cifar10",
        steps=30_000,
        pretrain_steps=1_000,
        batch_size=128,
        lr=3e-4,
    ),
}

# The ablation ladder of the benchmarks, each a set of flags. "full" is the default.
RECIPES: dict[str, dict] = {
    # the paper's plain VQ-VAE: codebook loss, beta = 1, random codebook, no pre-training
    "baseline": dict(
        use_ema=False, beta=1.0, kmeans=False, pretrain_steps=0, dead_code_threshold=0
    ),
    # + EMA codebook (decay 0.99, with the paper's beta = 0.25 for its EMA variant)
    "ema": dict(use_ema=True, beta=0.25, kmeans=False, pretrain_steps=0, dead_code_threshold=0),
    # + encoder pre-training and k-means init
    "ema-kmeans": dict(use_ema=True, beta=0.25, kmeans=True, dead_code_threshold=0),
    # + dead-code restarts: the project's recipe
    "full": dict(use_ema=True, beta=0.25, kmeans=True),
    # off the ladder: EMA + restarts, no pre-training or k-means (what restarts alone rescue)
    "ema-restarts": dict(use_ema=True, beta=0.25, kmeans=False, pretrain_steps=0),
}

# TrainConfig fields that override the model preset, named as VQVAEConfig names them
# (None = the preset's value).
MODEL_OPTIONS = (
    "codebook_size",
    "embedding_dim",
    "hidden_channels",
    "res_layers",
    "res_channels",
    "downsample",
    "image_size",
    "in_channels",
)


def option(default, help: str, *, resume: bool = False, choices=None):
    """A TrainConfig field with its --flag's help text; ``resume=True`` marks the options a
    ``--resume`` may change (the rest would change the run it continues, and are refused)."""
    return field(default=default, metadata=dict(help=help, resume=resume, choices=choices))


@dataclass
class TrainConfig:
    """Every option of a training run; each field is a ``--flag`` of ``python -m train``."""

    preset: str = option("mnist", f"training preset: {', '.join(TRAIN_PRESETS)}")
    recipe: str = option("full", "quantizer recipe (the benchmarks' ladder)", choices=RECIPES)
    dataset: str = option("mnist", "training data", choices=DATASETS)
    model_preset: str = option("mnist", "vqvae model preset the network starts from")
    data_dir: str = option("data", "dataset root, e.g. ../shared/data", resume=True)
    out: str = option("runs/mnist", "run folder (default runs/PRESET)", resume=True)
    # budget and optimizer
    steps: int = option(20_000, "VQ-training steps (phase 3)", resume=True)
    pretrain_steps: int = option(1_000, "autoencoder pre-training steps (phase 1); 0 = off")
    batch_size: int = option(128, "images per step per process")
    lr: float = option(3e-4, "peak learning rate (AdamW)")
    warmup_steps: int = option(200, "linear learning-rate warm-up steps")
    min_lr_ratio: float = option(0.05, "the cosine decay ends at lr times this")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "clip the gradient norm to this; 0 = off")
    seed: int = option(0, "seed of the initial weights, data order and k-means")
    # quantizer recipe
    use_ema: bool = option(True, "EMA codebook updates (--no-use-ema: codebook loss)")
    beta: float = option(0.25, "commitment cost")
    kmeans: bool = option(True, "k-means codebook init after pre-training")
    kmeans_images: int = option(4_096, "training images encoded for the k-means init")
    kmeans_samples: int = option(50_000, "encoder outputs k-means runs on (sampled from those)")
    dead_code_threshold: int = option(200, "restart codes unused this many steps; 0 = off")
    # model overrides (None: keep the model preset's value)
    codebook_size: int | None = option(None, "K, number of codes")
    embedding_dim: int | None = option(None, "D, dimensions of a code vector")
    hidden_channels: int | None = option(None, "encoder/decoder width")
    res_layers: int | None = option(None, "residual layers in encoder and decoder")
    res_channels: int | None = option(None, "channels inside a residual layer")
    downsample: int | None = option(None, "image side / code grid side: 2, 4, 8 or 16")
    image_size: int | None = option(None, "image side (folder datasets resize to it)")
    in_channels: int | None = option(None, "image channels: 1 or 3 (folder datasets)")
    # machinery
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", resume=True)
    amp: bool = option(True, "bf16 autocast on CUDA (the quantizer stays fp32)")
    compile: bool = option(
        False, "torch.compile the training step (CUDA graphs on GPU)", resume=True
    )
    channels_last: bool = option(True, "NHWC activations: faster on CUDA and on CPU (oneDNN)")
    limit_train: int = option(0, "use only N training images, evenly spread (0 = all)")
    limit_test: int = option(0, "use only N test images, evenly spread (0 = all)", resume=True)
    log_every: int = option(50, "steps between log lines", resume=True)
    eval_every: int = option(2_000, "steps between test evaluations", resume=True)
    eval_images: int = option(
        5_000, "test images of a periodic evaluation (the final one uses all)", resume=True
    )
    ckpt_every: int = option(1_000, "steps between checkpoints", resume=True)
    sample_every: int = option(2_000, "steps between sample grids", resume=True)

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
RESUMABLE = [name for name, f in FIELDS.items() if f.metadata["resume"]]
# Flags renamed to the config's field names; the old spelling gets a pointer to the new one.
RENAMED_FLAGS = {
    "--ema": "--use-ema",
    "--no-ema": "--no-use-ema",
    "--channels": "--in-channels",
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- options
def _flag_type(name: str):
    """int, float, str or bool: the field's annotation without its ``| None``."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _default_text(name: str) -> str:
    if name in ("preset", "out"):
        return ""
    if any(name in d for d in (*TRAIN_PRESETS.values(), *RECIPES.values())):
        return " (default: set by --preset / --recipe)"
    default = FIELDS[name].default
    if default is None:
        return " (default: the model preset's)"
    if isinstance(default, bool):
        return f" (default: {flag(name) if default else '--no-' + flag(name)[2:]})"
    return f" (default: {default})"


def make_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per TrainConfig field (bools as --x / --no-x), plus --resume."""
    p = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--channels" must not silently mean "--channels-last"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly; only "
        + ", ".join(flag(n) for n in RESUMABLE)
        + " may change",
    )
    # every default is None: build_config then knows which flags were given
    for name, f in FIELDS.items():
        kind = _flag_type(name)
        help_text = f.metadata["help"] + _default_text(name)
        if kind is bool:
            p.add_argument(
                flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            choices = f.metadata["choices"]
            p.add_argument(
                flag(name),
                type=kind,
                default=None,
                choices=sorted(choices) if choices is not None else None,
                help=help_text,
            )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:
        old = arg.split("=", 1)[0]
        if old in RENAMED_FLAGS:
            make_parser().error(f"{old} is now {RENAMED_FLAGS[old]}")
    return make_parser().parse_args(argv)


def _given(args: argparse.Namespace) -> dict:
    """The TrainConfig fields set by a flag."""
    return {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- recipe <- explicit flags."""
    preset_name = args.preset or "mnist"
    if preset_name not in TRAIN_PRESETS:
        raise TrainError(
            f"unknown preset {preset_name!r}; choose from {', '.join(sorted(TRAIN_PRESETS))}"
        )
    values = dict(preset=preset_name, out=f"runs/{preset_name}", **TRAIN_PRESETS[preset_name])
    try:
        values["dead_code_threshold"] = vqvae.preset(values["model_preset"]).dead_code_threshold
    except ValueError as e:
        raise TrainError(str(e)) from e
    values["recipe"] = args.recipe or "full"
    values.update(RECIPES[values["recipe"]])
    values.update(_given(args))
    return check_config(TrainConfig(**values))


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The saved options of the run in --out, with the flags a resume may change applied.
    A flag that would change anything else is refused: the run continues as it started."""
    out = Path(args.out or f"runs/{args.preset or 'mnist'}")
    saved = read_train_config(out)
    if saved is None:
        raise RunError(f"cannot resume: {out} is not a run folder (no {TRAIN_CONFIG})")
    saved = {k: v for k, v in saved.items() if k in FIELDS}
    saved["out"] = str(out)  # the folder resumed, also when it was moved since
    given = _given(args)
    refused = [
        f"{flag(k)} {v} (the run has {saved.get(k, FIELDS[k].default)})"
        for k, v in given.items()
        if not FIELDS[k].metadata["resume"] and v != saved.get(k, FIELDS[k].default)
    ]
    if refused:
        raise TrainError(
            f"--resume continues {out} with the options it started with; it cannot change "
            f"{', '.join(refused)}. A resume may change only "
            f"{', '.join(flag(n) for n in RESUMABLE)}; to change the others, start a new run "
            f"with another --out."
        )
    saved.update({k: v for k, v in given.items() if FIELDS[k].metadata["resume"]})
    return check_config(TrainConfig(**saved))


def check_config(cfg: TrainConfig) -> TrainConfig:
    if cfg.steps < 0 or cfg.pretrain_steps < 0 or cfg.batch_size < 1:
        raise TrainError("--steps and --pretrain-steps must be >= 0 and --batch-size >= 1")
    for k in ("log_every", "eval_every", "ckpt_every", "sample_every"):
        if getattr(cfg, k) < 1:
            raise TrainError(f"{flag(k)} must be >= 1 (use a large number to make it rare)")
    return cfg


def command_args(cfg: TrainConfig) -> list[str]:
    """Flags that rebuild ``cfg`` with ``python -m train``: the preset, the recipe, the budget,
    and every other option whose value differs from what that preset and recipe give."""
    base = build_config(parse_args(["--preset", cfg.preset, "--recipe", cfg.recipe]))
    always = ("preset", "recipe", "steps", "pretrain_steps", "batch_size", "lr", "seed")
    args: list[str] = []
    for name in FIELDS:
        value = getattr(cfg, name)
        if name == "out" or (name not in always and value == getattr(base, name)):
            continue
        if isinstance(value, bool):
            args.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            args += [flag(name), str(value)]
    return args


def model_config(cfg: TrainConfig) -> vqvae.VQVAEConfig:
    overrides = {k: getattr(cfg, k) for k in MODEL_OPTIONS if getattr(cfg, k) is not None}
    try:
        return vqvae.preset(
            cfg.model_preset,
            use_ema=cfg.use_ema,
            beta=cfg.beta,
            dead_code_threshold=cfg.dead_code_threshold,
            name=cfg.preset if cfg.preset != "folder" else "custom",
            **overrides,
        )
    except (ValueError, TypeError) as e:
        raise TrainError(f"invalid model options: {e}") from e


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


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay over all steps (both phases)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    )


def load_data(cfg: TrainConfig, rank: int, world: int):
    """(train uint8 (N, C, H, W), test uint8, DataInfo). Under DDP rank 0 loads first (it may
    unpack an archive into the cache) and the other ranks wait, then read what it prepared."""

    def load():
        try:
            kw = dict(image_size=cfg.image_size, channels=cfg.in_channels)
            train_u8, info = load_uint8(cfg.dataset, cfg.data_dir, "train", **kw)
            test_u8, _ = load_uint8(cfg.dataset, cfg.data_dir, "test", **kw)
        except ValueError as e:
            raise TrainError(str(e)) from e
        return train_u8, test_u8, info

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


class Batches:
    """Real epochs over shuffled data: the order is a function of (seed, epoch) alone, so a
    resumed run sees exactly the batches it would have seen. Each rank takes its slice of
    every global batch. Data stays uint8 on its device and is scaled to [0, 1] per batch:
    uint8 / 255 is in the model's input range by construction, so no step checks it."""

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
        channels_last: bool,
    ):
        self.images, self.bs, self.seed, self.rank, self.world = (
            images,
            batch_size,
            seed,
            rank,
            world,
        )
        self.per_epoch = len(images) // (batch_size * world)
        if self.per_epoch == 0:
            raise TrainError(
                f"{len(images)} training images are fewer than one batch of "
                f"{batch_size * world}; lower --batch-size"
            )
        self.channels_last = channels_last
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.images), generator=g).to(self.images.device)
            self._epoch = epoch
        start = (pos * self.world + self.rank) * self.bs
        x = self.images[self._perm[start : start + self.bs]].float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


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


# ----------------------------------------------------------------------------- one step
def forward_loss(net, x: torch.Tensor, quantize: bool, amp: bool) -> vqvae.VQVAEOutput:
    """The training forward and its losses: the region ``--compile`` compiles as one graph."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        return net(x, quantize=quantize)


def compiled_forward(device: torch.device):
    """``forward_loss`` compiled: with CUDA graphs on CUDA (a step's launch overhead is then
    one replay), plain ``torch.compile`` elsewhere. Backward runs the compiled backward graph."""
    if device.type != "cuda":
        return torch.compile(forward_loss)
    graphed = torch.compile(forward_loss, mode="reduce-overhead")

    def forward(*args):
        # a new step: the previous step's outputs (read at log steps only) may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(*args)

    return forward


def train_step(
    net,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    *,
    quantize: bool,
    amp: bool = False,
    grad_clip: float = 0.0,
    forward=forward_loss,
) -> vqvae.VQVAEOutput:
    """One optimisation step on images ``x`` (B, C, H, W) in [0, 1]: forward and loss
    (``forward``, compiled under --compile), backward, gradient clipping, optimizer step.
    Nothing here waits for the device: the output's statistics stay tensors until read."""
    o = forward(net, x, quantize, amp)
    opt.zero_grad(set_to_none=True)
    o.loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    return o


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, dev: torch.device):
    """AdamW; the fused kernel on CUDA (one launch for all parameters)."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(0.9, 0.99),
        weight_decay=cfg.weight_decay,
        fused=dev.type == "cuda",
    )


# ----------------------------------------------------------------------------- run state
@dataclass
class RunState(RunClock):
    """What the loop's helpers share: options, model, optimizer, data, where the run is, and
    its files (rank 0 only)."""

    cfg: TrainConfig
    model: vqvae.VQVAE
    opt: torch.optim.Optimizer
    dev: torch.device
    rank: int
    world: int
    train_u8: torch.Tensor
    test_u8: torch.Tensor
    amp: bool  # bf16 autocast
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this process started
    kmeans_done: bool = False
    saved_step: int = -1  # step of the newest checkpoint this process wrote
    started: float = field(default_factory=time.time)
    log: IO | None = None
    writer: Any = None  # tensorboard SummaryWriter, when installed
    window: tuple[int, float] = (0, 0.0)  # (step, time) of the last log line, for images/s


def emit(state: RunState, record: dict) -> None:
    """One line of metrics.jsonl (and tensorboard scalars); rank 0 only."""
    state.write_metrics(record)
    if state.writer is not None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and k not in ("step", "elapsed_s"):
                state.writer.add_scalar(k, v, record["step"])


def log_step(state: RunState, o: vqvae.VQVAEOutput, x: torch.Tensor, vq: bool) -> dict:
    """Read the step's statistics back from the device (the only host sync of a log step)."""
    loss = o.loss.detach().item()
    if not math.isfinite(loss):
        raise TrainError(
            f"loss became {loss} at step {state.step}; the last good checkpoint "
            f"in {state.out} is kept. Try a lower --lr or --grad-clip."
        )
    now, (last_step, last_time) = time.time(), state.window
    images = (state.step - last_step) * state.cfg.batch_size * state.world
    record = {
        "step": state.step,
        "phase": "vq" if vq else "pretrain",
        "loss": loss,
        "recon_loss": o.recon_loss.detach().item(),
        "commitment_loss": o.commitment_loss.detach().item(),
        "codebook_loss": o.codebook_loss.detach().item(),
        "perplexity": o.perplexity.item(),
        "codes_used": int(o.codes_used),
        "psnr": psnr(o.reconstruction.detach().float(), x.float()).mean().item(),
        "lr": state.opt.param_groups[0]["lr"],
        "images_per_s": images / max(now - last_time, 1e-9) if last_step else None,
    }
    state.window = (state.step, time.time())
    emit(state, record)
    return record


def evaluate_now(state: RunState, vq: bool, *, final: bool = False) -> dict:
    """Test metrics (--eval-images evenly spread over the split, or every test image when
    ``final``)."""
    test = state.test_u8
    images = test if final else test[spread(len(test), state.cfg.eval_images)]
    ev = evaluate(state.model, images, device=state.dev, progress=final, quantize=vq)
    record = {"step": state.step, "phase": "vq" if vq else "pretrain", "eval": ev}
    emit(state, {**record, "final": True} if final else record)
    state.model.train()
    return ev


def save_samples(state: RunState) -> None:
    """samples/step_NNNNNN.png: 16 test images (top) and their reconstructions (bottom)."""
    from torchvision.utils import save_image

    model = state.model
    model.eval()
    with torch.no_grad():
        x = state.test_u8[:16].to(state.dev).float() / 255
        rec = model(x, quantize=state.step >= state.cfg.pretrain_steps).reconstruction.float()
    model.train()
    path = state.out / "samples" / f"step_{state.step:06d}.png"
    save_image(torch.cat([x, rec]), path, nrow=16)


def save_checkpoint(state: RunState) -> None:
    """checkpoint.pt (everything --resume needs; the one before it is kept as the fallback)
    and the latest weights (config.json + model.safetensors, loadable by load_pretrained)."""
    # checked on every rank: DDP keeps the weights equal, so all ranks stop together
    # instead of the others waiting in a collective for rank 0
    bad = [
        n
        for n, p in state.model.state_dict().items()
        if p.is_floating_point() and not torch.isfinite(p).all()
    ]
    if bad:
        raise TrainError(
            f"weights became NaN/inf at step {state.step} ({bad[0]}); the last good "
            f"checkpoint in {state.out} is kept. Try a lower --lr."
        )
    if not state.main:
        return
    checkpoint = {
        "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
        "optimizer": state.opt.state_dict(),
        "step": state.step,
        "kmeans_done": state.kmeans_done,
        "elapsed": state.seconds(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(state.dev) if state.dev.type == "cuda" else None,
        "train_config": json.dumps(dataclasses.asdict(state.cfg)),
    }
    try:
        save_checkpoint_file(checkpoint, state.out)
        state.model.save_pretrained(state.out)
        state.saved_step = state.step
    except OSError as e:
        raise TrainError(
            f"could not save the checkpoint of step {state.step} in {state.out}: "
            f"{e.strerror or e}. The previous checkpoint is kept; make room and continue "
            f"with: python -m train --out {state.out} --resume"
        ) from e


def kmeans_init(state: RunState) -> None:
    """Set the codebook by k-means on encoder outputs of --kmeans-images training images."""
    cfg, model, train_u8 = state.cfg, state.model, state.train_u8
    n = min(cfg.kmeans_images, len(train_u8))
    g = torch.Generator().manual_seed(cfg.seed + 17)
    pick = torch.randperm(len(train_u8), generator=g)[:n][state.rank :: state.world]
    pick = pick.to(train_u8.device)
    model.eval()
    with (
        torch.no_grad(),
        torch.autocast(state.dev.type, dtype=torch.bfloat16, enabled=state.amp),
    ):
        z = torch.cat(
            [
                model.encode_continuous(
                    train_u8[pick[i : i + 512]].to(state.dev).float() / 255
                ).float()
                for i in range(0, len(pick), 512)
            ]
        )
    model.train()
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    keep = torch.randperm(len(flat), generator=g)[: max(1, cfg.kmeans_samples // state.world)]
    inertia = float(model.quantizer.init_kmeans(flat[keep.to(flat.device)], seed=cfg.seed))
    if state.main:
        print(
            f"k-means init on {len(keep) * state.world} encoder outputs: "
            f"inertia/sample {inertia:.4f}",
            flush=True,
        )
    emit(state, {"step": state.step, "event": "kmeans_init", "inertia_per_sample": inertia})
    state.kmeans_done = True


def phase_model(state: RunState, vq: bool):
    """The module a phase trains: the codebook is a trained parameter only in the VQ phase
    without EMA; under DDP the wrapper is rebuilt because that set of parameters changed."""
    state.model.quantizer.embedding.requires_grad_(vq and not state.model.config.use_ema)
    if state.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = state.dev
        return DDP(state.model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return state.model


def stop_agreed(state: RunState, stop: StopFlag) -> bool:
    """Whether to stop after this step. Under DDP every rank must stop at the same step:
    they agree at log steps only (a collective every step would stall the GPU)."""
    if state.world == 1:
        return stop.requested
    if state.step % state.cfg.log_every:
        return False
    flag_t = torch.tensor([float(stop.requested)], device=state.dev)
    dist.all_reduce(flag_t, op=dist.ReduceOp.MAX)
    return bool(flag_t.item())


# ----------------------------------------------------------------------------- the run
def open_logs(state: RunState, info: DataInfo) -> None:
    """Rank 0: the options (train_config.json), metrics.jsonl and tensorboard."""
    out = state.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / TRAIN_CONFIG,
        {
            **dataclasses.asdict(state.cfg),
            "data_source": info.source,
            "world_size": state.world,
        },
        indent=2,
    )
    state.log = open(out / METRICS, "a")
    try:
        from torch.utils.tensorboard import SummaryWriter

        state.writer = SummaryWriter(str(out / "tb"))
    except ImportError:  # tensorboard is optional
        state.writer = None


def run(cfg: TrainConfig, resume: bool = False, build_model=None) -> dict:
    """Train as ``cfg`` says; returns the summary. ``build_model(model_config)`` replaces
    ``vqvae.VQVAE`` (the benchmarks use it to swap in another quantizer)."""
    rank, world, local_rank = setup_distributed()
    dev = resolve_device(cfg.device, local_rank)
    out = Path(cfg.out)

    # resume or start fresh, never overwriting a run by accident
    ckpt, finished = start_or_resume(out, resume, cfg.total_steps, announce=rank == 0)
    if finished is not None:  # nothing to train: every file stays as it is
        return finished

    # data
    train_u8, test_u8, info = load_data(cfg, rank, world)
    # evenly spread subsets: a split may be sorted by class (CIFAR-10's copy is)
    train_u8 = train_u8[spread(len(train_u8), cfg.limit_train)]
    test_u8 = test_u8[spread(len(test_u8), cfg.limit_test)]
    on_gpu = dev.type == "cuda" and train_u8.numel() < 4 * 2**30
    train_u8 = train_u8.to(dev if on_gpu else "cpu")

    # model and optimizer
    mcfg = model_config(cfg)
    if (train_u8.shape[1], train_u8.shape[2]) != (mcfg.in_channels, mcfg.image_size):
        raise TrainError(
            f"data is {tuple(train_u8.shape[1:])} but the model expects "
            f"{mcfg.in_channels}x{mcfg.image_size}x{mcfg.image_size}; set "
            f"--in-channels/--image-size"
        )
    torch.manual_seed(cfg.seed)
    model = (build_model or vqvae.VQVAE)(mcfg).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg, dev)
    state = RunState(
        cfg, model, opt, dev, rank, world, train_u8, test_u8, cfg.amp and dev.type == "cuda"
    )
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state.step, state.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        state.kmeans_done = bool(ckpt["kmeans_done"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if dev.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
        if state.main:  # the lines after the checkpoint will be written again
            truncate_metrics(out, state.step, state.kmeans_done)
    forward = compiled_forward(dev) if cfg.compile else forward_loss
    batches = Batches(train_u8, cfg.batch_size, cfg.seed, rank, world, cfg.channels_last)
    if state.main:
        open_logs(state, info)

    from tqdm.auto import tqdm

    stop = StopFlag()
    bar = tqdm(
        total=cfg.total_steps,
        initial=state.step,
        disable=not state.main,
        dynamic_ncols=True,
        desc="pretrain" if state.step < cfg.pretrain_steps else "vq",
    )
    current_vq, net = None, None
    model.train()
    state.started = time.time()
    state.window = (0, state.started)
    try:
        while state.step < cfg.total_steps:
            vq = state.step >= cfg.pretrain_steps
            if vq != current_vq:  # a new phase: k-means on the pre-trained encoder first
                if vq and cfg.kmeans and not state.kmeans_done:
                    kmeans_init(state)
                net, current_vq = phase_model(state, vq), vq
                bar.set_description("vq" if vq else "pretrain")

            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, state.step)
            x = batches(state.step)
            o = train_step(
                net, opt, x, quantize=vq, amp=state.amp, grad_clip=cfg.grad_clip, forward=forward
            )
            state.step += 1
            step = state.step
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.total_steps:
                rec = log_step(state, o, x, vq)
                bar.set_postfix(
                    loss=f"{rec['loss']:.4f}",
                    psnr=f"{rec['psnr']:.2f}",
                    ppl=f"{rec['perplexity']:.0f}",
                    used=rec["codes_used"],
                )
            if state.main and step % cfg.eval_every == 0 and step < cfg.total_steps:
                ev = evaluate_now(state, vq)
                bar.write(
                    f"step {step}: test PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f}, "
                    f"codes used {ev['codes_used']}/{mcfg.codebook_size}"
                )
            if state.main and step % cfg.sample_every == 0:
                save_samples(state)
            stopping = stop_agreed(state, stop)
            if step % cfg.ckpt_every == 0 or stopping:
                save_checkpoint(state)
            if stopping:
                break
    finally:
        bar.close()
        stop.restore()
    return finish(state, info)


def finish(state: RunState, info: DataInfo) -> dict:
    """The last checkpoint, samples and full test evaluation of a completed run; the summary
    (also of an interrupted one)."""
    cfg, out = state.cfg, state.out
    interrupted = state.step < cfg.total_steps
    final_eval = None
    if not interrupted:
        if state.saved_step != state.step:  # the checkpoint before it stays the fallback
            save_checkpoint(state)
        if state.main:
            save_samples(state)
            final_eval = evaluate_now(state, state.step >= cfg.pretrain_steps, final=True)
    summary = {
        "step": state.step,
        "total_steps": cfg.total_steps,
        "interrupted": interrupted,
        "elapsed_s": round(state.seconds(), 1),
        "device": str(state.dev),
        "hardware": hardware(state.dev),
        "world_size": state.world,
        "data_source": info.source,
        "torch": torch.__version__,
        "final_eval": final_eval,
    }
    if state.main:
        write_json_atomic(out / "summary.json", summary, indent=2)
        state.log.close()
        if state.writer is not None:
            state.writer.close()
        if interrupted:
            print(
                f"stopped at step {state.step}; checkpoint saved. Continue with: "
                f"python -m train --out {out} --resume",
                file=sys.stderr,
            )
        else:
            print(
                f"done: {state.step} steps in {summary['elapsed_s']:.0f} s; test PSNR "
                f"{final_eval['psnr']:.2f} dB, codes used {final_eval['codes_used']}/"
                f"{state.model.config.codebook_size}; weights in {out}"
            )
    if state.world > 1:
        dist.barrier()
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = resume_config(args) if args.resume else build_config(args)
        summary = run(cfg, resume=args.resume)
    except (TrainError, RunError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        out = args.out or f"runs/{args.preset or 'mnist'}"
        print(
            f"error: no space left on the disk while writing {e.filename or out}; make room "
            f"and continue with: python -m train --out {out} --resume",
            file=sys.stderr,
        )
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary["interrupted"]:
        sys.exit(130)
