"""python -m train: (1) pre-train encoder+decoder without quantization, (2) k-means init of the
codebook on encoder outputs, (3) VQ training with EMA codebook and dead-code restarts.

Reads top to bottom: options -> data -> model -> the loop. Every phase can be switched off:
the seed-001 recipe is ``--recipe baseline`` (codebook loss, beta=1, random init, no
pre-training). Runs on CUDA (bf16 autocast, data resident on the GPU, channels_last,
optional torch.compile), on CPU, and on several GPUs with
``torchrun --nproc_per_node=N -m train ...`` (DDP; only rank 0 writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import vqvae
from vqvae.data import DATASETS, DatasetNotFoundError, load_uint8
from vqvae.metrics import psnr

from .evaluate import evaluate
from .runs import (
    CHECKPOINT,
    METRICS,
    TRAIN_CONFIG,
    RunError,
    atomic_torch_save,
    load_checkpoint,
    read_train_config,
)


class TrainError(RuntimeError):
    """A problem with the user's options or the run (printed as one clear message)."""


# Training presets: which data, which model preset, and a default budget. The shipped mnist,
# fashion-mnist and cifar10 models were trained to these budgets (see their model cards).
# Flags override any of these.
TRAIN_PRESETS: dict[str, dict] = {
    "mnist": dict(
        dataset="mnist", model="mnist", steps=20_000, pretrain_steps=1_000, batch_size=128, lr=3e-4
    ),
    "fashion-mnist": dict(
        dataset="fashion-mnist",
        model="fashion-mnist",
        steps=20_000,
        pretrain_steps=1_000,
        batch_size=128,
        lr=3e-4,
    ),
    "cifar10": dict(
        dataset="cifar10",
        model="cifar10",
        steps=60_000,
        pretrain_steps=2_000,
        batch_size=128,
        lr=3e-4,
    ),
    # your own images: root/train/<class>/*.png and root/test/<class>/*.png
    "folder": dict(
        dataset="folder",
        model="cifar10",
        steps=30_000,
        pretrain_steps=1_000,
        batch_size=128,
        lr=3e-4,
    ),
}

# The ablation ladder of the benchmarks, each a set of flags. "full" is the default.
RECIPES: dict[str, dict] = {
    # seed 001: codebook loss, beta = 1, random codebook, no pre-training
    "baseline": dict(ema=False, beta=1.0, kmeans=False, pretrain_steps=0, dead_code_threshold=0),
    # + EMA codebook (decay 0.99, with the paper's beta = 0.25 for its EMA variant)
    "ema": dict(ema=True, beta=0.25, kmeans=False, pretrain_steps=0, dead_code_threshold=0),
    # + encoder pre-training and k-means init (seed 004)
    "ema-kmeans": dict(ema=True, beta=0.25, kmeans=True, dead_code_threshold=0),
    # + dead-code restarts: the project's recipe
    "full": dict(ema=True, beta=0.25, kmeans=True),
    # off the ladder: (b) + restarts, no pre-training or k-means (what restarts alone rescue)
    "ema-restarts": dict(ema=True, beta=0.25, kmeans=False, pretrain_steps=0),
}


# TrainConfig fields that override the model preset (each a --flag; None = the preset's).
MODEL_OPTIONS = (
    "codebook_size",
    "embedding_dim",
    "hidden_channels",
    "res_layers",
    "res_channels",
    "downsample",
    "image_size",
    "channels",
)


@dataclass
class TrainConfig:
    preset: str = "mnist"
    recipe: str = "full"
    dataset: str = "mnist"
    model: str = "mnist"  # vqvae model preset the network starts from
    data_dir: str = "data"
    out: str = "runs/mnist"
    steps: int = 20_000  # VQ-training steps (phase 3)
    pretrain_steps: int = 1_000  # phase 1; 0 = off
    batch_size: int = 128  # per process
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decay to lr * this
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    # quantizer recipe
    ema: bool = True
    beta: float = 0.25
    kmeans: bool = True
    kmeans_images: int = 4_096  # images encoded for k-means
    kmeans_samples: int = 50_000  # vectors k-means runs on (sampled from those)
    dead_code_threshold: int = 200  # steps; 0 = off
    # model overrides (None: keep the model preset's value)
    codebook_size: int | None = None
    embedding_dim: int | None = None
    hidden_channels: int | None = None
    res_layers: int | None = None
    res_channels: int | None = None
    downsample: int | None = None
    image_size: int | None = None  # folder datasets
    channels: int | None = None  # folder datasets
    # machinery
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (the quantizer stays fp32)
    compile: bool = False
    channels_last: bool = True  # NHWC activations: faster on CUDA and on CPU (oneDNN)
    limit_train: int = 0  # use only the first N training images (tests, quick looks)
    limit_test: int = 0
    log_every: int = 50
    eval_every: int = 2_000
    eval_images: int = 5_000  # test images for periodic eval (the final eval uses all)
    ckpt_every: int = 1_000
    sample_every: int = 2_000

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps


# ----------------------------------------------------------------------------- options
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help=f"one of {sorted(TRAIN_PRESETS)} (default mnist)")
    p.add_argument(
        "--recipe",
        default=None,
        choices=sorted(RECIPES),
        help="quantizer recipe ladder used by the benchmarks (default full)",
    )
    p.add_argument("--dataset", choices=DATASETS, help="override the preset's dataset")
    p.add_argument("--data-dir", help="dataset root (e.g. ../shared/data); default ./data")
    p.add_argument("--out", help="run folder (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--steps", type=int, help="VQ-training steps (phase 3)")
    p.add_argument("--pretrain-steps", type=int, help="autoencoder pre-training steps; 0 = off")
    p.add_argument("--batch-size", type=int, help="images per step per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--ema", action=bool_flag, help="EMA codebook (--no-ema: codebook loss)")
    p.add_argument("--beta", type=float, help="commitment cost")
    p.add_argument("--kmeans", action=bool_flag, help="k-means codebook init after pre-training")
    p.add_argument("--kmeans-images", type=int)
    p.add_argument(
        "--dead-code-threshold", type=int, help="restart codes unused this many steps; 0 = off"
    )
    for name in MODEL_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int)
    p.add_argument("--amp", action=bool_flag, help="bf16 autocast on CUDA (default on)")
    p.add_argument("--compile", action=bool_flag, help="torch.compile encoder and decoder")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--limit-test", type=int, help="use only the first N test images")
    for name in ("log-every", "eval-every", "eval-images", "ckpt-every", "sample-every"):
        p.add_argument(f"--{name}", type=int)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- recipe <- explicit flags."""
    preset_name = args.preset or "mnist"
    if preset_name not in TRAIN_PRESETS:
        raise TrainError(
            f"unknown preset {preset_name!r}; choose from {', '.join(sorted(TRAIN_PRESETS))}"
        )
    values = dict(preset=preset_name, out=f"runs/{preset_name}", **TRAIN_PRESETS[preset_name])
    values["dead_code_threshold"] = vqvae.preset(values["model"]).dead_code_threshold
    recipe = args.recipe or "full"
    values["recipe"] = recipe
    values.update(RECIPES[recipe])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for k, v in vars(args).items():
        if k in fields and v is not None and k not in ("preset", "recipe"):
            values[k] = v
    return check_config(TrainConfig(**values))


def check_config(cfg: TrainConfig) -> TrainConfig:
    if cfg.steps < 0 or cfg.pretrain_steps < 0 or cfg.batch_size < 1:
        raise TrainError("--steps and --pretrain-steps must be >= 0 and --batch-size >= 1")
    for k in ("log_every", "eval_every", "ckpt_every", "sample_every"):
        if getattr(cfg, k) < 1:
            raise TrainError(
                f"--{k.replace('_', '-')} must be >= 1 (use a large number to make it rare)"
            )
    return cfg


def model_config(cfg: TrainConfig) -> vqvae.VQVAEConfig:
    overrides = {
        k: getattr(cfg, k)
        for k in (
            "codebook_size",
            "embedding_dim",
            "hidden_channels",
            "res_layers",
            "res_channels",
            "downsample",
        )
        if getattr(cfg, k) is not None
    }
    if cfg.image_size is not None:
        overrides["image_size"] = cfg.image_size
    if cfg.channels is not None:
        overrides["in_channels"] = cfg.channels
    try:
        return vqvae.preset(
            cfg.model,
            use_ema=cfg.ema,
            beta=cfg.beta,
            dead_code_threshold=cfg.dead_code_threshold,
            name=cfg.preset if cfg.preset != "folder" else "custom",
            **overrides,
        )
    except ValueError as e:
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


class Batches:
    """Real epochs over shuffled data: the order is a function of (seed, epoch) alone, so a
    resumed run sees exactly the batches it would have seen. Each rank takes its slice of
    every global batch. Data stays uint8 on its device and is scaled to [0, 1] per batch."""

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


# ----------------------------------------------------------------------------- the run
def run(cfg: TrainConfig, resume: bool = False, build_model=None) -> dict:
    """Train as ``cfg`` says; returns the summary. ``build_model(model_config)`` replaces
    ``vqvae.VQVAE`` (the benchmarks use it to swap in another quantizer)."""
    rank, world, local_rank = setup_distributed()
    main_proc = rank == 0
    dev = resolve_device(cfg.device, local_rank)
    out = Path(cfg.out)

    # resume or start fresh, never overwriting a run by accident
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        if int(ckpt["step"]) >= cfg.total_steps:  # nothing to train: leave every file as it is
            if main_proc:
                print(
                    f"{out} already finished at step {int(ckpt['step'])} of {cfg.total_steps}; "
                    f"nothing to do (pass a larger --steps to train on)",
                    file=sys.stderr,
                )
            summary_file = out / "summary.json"
            return (
                json.loads(summary_file.read_text())
                if summary_file.is_file()
                else {
                    "step": int(ckpt["step"]),
                    "total_steps": cfg.total_steps,
                    "interrupted": False,
                }
            )
    elif (out / CHECKPOINT).exists():
        raise TrainError(
            f"{out} already holds a run; pass --resume to continue it or choose "
            f"another --out (nothing was changed)"
        )

    # data
    try:
        train_u8, info = load_uint8(
            cfg.dataset, cfg.data_dir, "train", image_size=cfg.image_size, channels=cfg.channels
        )
        test_u8, _ = load_uint8(
            cfg.dataset, cfg.data_dir, "test", image_size=cfg.image_size, channels=cfg.channels
        )
    except ValueError as e:
        raise TrainError(str(e)) from e
    if cfg.limit_train:
        train_u8 = train_u8[: cfg.limit_train]
    if cfg.limit_test:
        test_u8 = test_u8[: cfg.limit_test]
    on_gpu = dev.type == "cuda" and train_u8.numel() < 4 * 2**30
    train_u8 = train_u8.to(dev if on_gpu else "cpu")
    cl = cfg.channels_last

    # model
    mcfg = model_config(cfg)
    if (train_u8.shape[1], train_u8.shape[2]) != (mcfg.in_channels, mcfg.image_size):
        raise TrainError(
            f"data is {tuple(train_u8.shape[1:])} but the model expects "
            f"{mcfg.in_channels}x{mcfg.image_size}x{mcfg.image_size}; set "
            f"--channels/--image-size"
        )
    torch.manual_seed(cfg.seed)
    model = (build_model or vqvae.VQVAE)(mcfg).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay
    )
    step, elapsed, kmeans_done = 0, 0.0, False
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, elapsed, kmeans_done = (
            int(ckpt["step"]),
            float(ckpt["elapsed"]),
            bool(ckpt["kmeans_done"]),
        )
        torch.set_rng_state(ckpt["rng_cpu"])
        if dev.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
    if cfg.compile:
        model.encoder.compile()
        model.decoder.compile()

    batches = Batches(train_u8, cfg.batch_size, cfg.seed, rank, world, cl)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda")

    # files (rank 0 only)
    log = writer = None
    if main_proc:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        (out / TRAIN_CONFIG).write_text(
            json.dumps(
                {**dataclasses.asdict(cfg), "data_source": info.source, "world_size": world},
                indent=2,
            )
        )
        log = open(out / METRICS, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional
            writer = None

    def emit(record: dict) -> None:
        record.setdefault("elapsed_s", round(elapsed + time.time() - t_start, 2))
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "elapsed_s"):
                    writer.add_scalar(k, v, record["step"])

    def save(at_step: int) -> None:
        # checked on every rank: DDP keeps the weights equal, so all ranks stop together
        # instead of the others waiting in a collective for rank 0
        bad = [
            n
            for n, p in model.state_dict().items()
            if p.is_floating_point() and not torch.isfinite(p).all()
        ]
        if bad:
            raise TrainError(
                f"weights became NaN/inf at step {at_step} ({bad[0]}); the last good "
                f"checkpoint in {out} is kept. Try a lower --lr."
            )
        if not main_proc:
            return
        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "step": at_step,
            "kmeans_done": kmeans_done,
            "elapsed": elapsed + (time.time() - t_start),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "train_config": json.dumps(dataclasses.asdict(cfg)),
        }
        atomic_torch_save(state, out / CHECKPOINT)
        model.save_pretrained(out)  # latest weights, loadable by vqvae.load_pretrained(out)

    def sample_grid(at_step: int) -> None:
        from torchvision.utils import save_image

        model.eval()
        with torch.no_grad():
            x = test_u8[:16].to(dev).float() / 255
            rec = model(x, quantize=at_step >= cfg.pretrain_steps).reconstruction.float()
        model.train()
        save_image(torch.cat([x, rec]), out / "samples" / f"step_{at_step:06d}.png", nrow=16)

    def kmeans_init() -> None:
        n = min(cfg.kmeans_images, len(train_u8))
        g = torch.Generator().manual_seed(cfg.seed + 17)
        pick = torch.randperm(len(train_u8), generator=g)[:n][rank::world].to(train_u8.device)
        model.eval()
        with torch.no_grad(), amp:
            z = torch.cat(
                [
                    model.encode_continuous(
                        train_u8[pick[i : i + 512]].to(dev).float() / 255
                    ).float()
                    for i in range(0, len(pick), 512)
                ]
            )
        model.train()
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        keep = torch.randperm(len(flat), generator=g)[: max(1, cfg.kmeans_samples // world)]
        inertia = model.quantizer.init_kmeans(flat[keep.to(flat.device)], seed=cfg.seed)
        if main_proc:
            print(
                f"k-means init on {len(keep) * world} encoder outputs: "
                f"inertia/sample {float(inertia):.4f}",
                flush=True,
            )
        emit({"step": step, "event": "kmeans_init", "inertia_per_sample": float(inertia)})

    # which forward the step uses; DDP is rebuilt when the set of trained parameters changes
    def phase_model(vq: bool):
        model.quantizer.embedding.requires_grad_(vq and not mcfg.use_ema)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            return DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        return model

    from tqdm.auto import tqdm

    stop = StopFlag()
    t_start = time.time()
    bar = tqdm(
        total=cfg.total_steps,
        initial=step,
        disable=not main_proc,
        dynamic_ncols=True,
        desc="pretrain" if step < cfg.pretrain_steps else "vq",
    )
    current_vq, net = None, None
    window = dict(n=0, t=time.time(), loss=0.0)
    model.train()
    final_eval = None
    try:
        while step < cfg.total_steps:
            vq = step >= cfg.pretrain_steps
            if vq != current_vq:
                if vq and cfg.kmeans and not kmeans_done:
                    kmeans_init()  # on the pre-trained encoder (or the random one if no phase 1)
                    kmeans_done = True
                net, current_vq = phase_model(vq), vq
                bar.set_description("vq" if vq else "pretrain")

            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            x = batches(step)
            with amp:
                o = net(x, quantize=vq)
            opt.zero_grad(set_to_none=True)
            o.loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.total_steps:
                loss = o.loss.detach().item()
                if not math.isfinite(loss):
                    raise TrainError(
                        f"loss became {loss} at step {step}; the last good checkpoint "
                        f"in {out} is kept. Try a lower --lr or --grad-clip."
                    )
                dt = time.time() - window["t"]
                rec = {
                    "step": step,
                    "phase": "vq" if vq else "pretrain",
                    "loss": loss,
                    "recon_loss": o.recon_loss.detach().item(),
                    "commitment_loss": o.commitment_loss.detach().item(),
                    "codebook_loss": o.codebook_loss.detach().item(),
                    "perplexity": o.perplexity.item(),
                    "codes_used": int(o.codes_used),
                    "psnr": psnr(o.reconstruction.detach().float(), x.float()).mean().item(),
                    "lr": opt.param_groups[0]["lr"],
                    "images_per_s": (step - window["n"]) * cfg.batch_size * world / max(dt, 1e-9)
                    if window["n"]
                    else None,
                }
                window.update(n=step, t=time.time())
                emit(rec)
                bar.set_postfix(
                    loss=f"{loss:.4f}",
                    psnr=f"{rec['psnr']:.2f}",
                    ppl=f"{rec['perplexity']:.0f}",
                    used=rec["codes_used"],
                )
            if main_proc and (step % cfg.eval_every == 0) and step < cfg.total_steps:
                ev = evaluate(
                    model, test_u8[: cfg.eval_images], device=dev, progress=False, quantize=vq
                )
                emit({"step": step, "eval": ev})
                bar.write(
                    f"step {step}: test PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f}, "
                    f"codes used {ev['codes_used']}/{mcfg.codebook_size}"
                )
                model.train()
            if main_proc and step % cfg.sample_every == 0:
                sample_grid(step)
            # under DDP every rank must stop at the same step: they agree at log steps only
            # (a collective and a host sync every step would slow the GPU down)
            stopping = stop.requested
            if world > 1:
                stopping = False
                if step % cfg.log_every == 0:
                    flag = torch.tensor([float(stop.requested)], device=dev)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stopping = bool(flag.item())
            if step % cfg.ckpt_every == 0 or stopping:
                save(step)
            if stopping:
                break
    finally:
        bar.close()
        stop.restore()
    interrupted = step < cfg.total_steps
    if not interrupted:
        save(step)
        if main_proc:
            sample_grid(step)
            final_eval = evaluate(
                model, test_u8, device=dev, progress=True, quantize=step >= cfg.pretrain_steps
            )
            emit({"step": step, "eval": final_eval, "final": True})
    summary = {
        "step": step,
        "total_steps": cfg.total_steps,
        "interrupted": interrupted,
        "elapsed_s": round(elapsed + time.time() - t_start, 1),
        "device": str(dev),
        "hardware": hardware(dev),
        "world_size": world,
        "data_source": info.source,
        "torch": torch.__version__,
        "final_eval": final_eval,
    }
    if main_proc:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
        if interrupted:
            print(
                f"stopped at step {step}; checkpoint saved. Continue with: "
                f"python -m train --out {out} --resume",
                file=sys.stderr,
            )
        elif final_eval:
            print(
                f"done: {step} steps in {summary['elapsed_s']:.0f} s; test PSNR "
                f"{final_eval['psnr']:.2f} dB, codes used {final_eval['codes_used']}/"
                f"{mcfg.codebook_size}; weights in {out}"
            )
    if world > 1:
        dist.barrier()
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        if args.resume:
            out = Path(args.out or f"runs/{args.preset or 'mnist'}")
            saved = read_train_config(out)
            if saved is None:
                raise RunError(f"cannot resume: {out} is not a run folder (no {TRAIN_CONFIG})")
            saved = {
                k: v
                for k, v in saved.items()
                if k in {f.name for f in dataclasses.fields(TrainConfig)}
            }
            saved["out"] = str(out)  # the folder resumed, also when it was moved since
            # a resumed run keeps its options; only these may change
            for k in (
                "steps",
                "device",
                "data_dir",
                "log_every",
                "eval_every",
                "ckpt_every",
                "sample_every",
                "compile",
            ):
                if getattr(args, k, None) is not None:
                    saved[k] = getattr(args, k)
            cfg = check_config(TrainConfig(**saved))
        else:
            cfg = build_config(args)
        summary = run(cfg, resume=args.resume)
    except (TrainError, RunError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary["interrupted"]:
        sys.exit(130)
