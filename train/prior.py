"""python -m train.prior: train a prior over a VQ-VAE's codes (vqvae.prior.CodePrior).

python -m train.prior --vqvae mnist --data-dir ../shared/data --out runs/prior-mnist
python -m train.prior --out runs/prior-mnist --resume          # continue exactly
python -m train.prior export runs/prior-mnist --name mnist     # into pretrained/mnist/

Encodes the train and test splits with the VQ-VAE once (cached in the run folder, keyed by
the codebook's fingerprint), then trains the transformer on the code grids: AdamW with
warm-up and cosine decay, labels dropped with probability --label-dropout so one prior
samples with and without a class (classifier-free guidance), bf16 autocast on CUDA. Writes
like ``python -m train``: metrics.jsonl, periodic test NLL and decoded sample grids, atomic
checkpoints, Ctrl-C saves; ``torchrun --nproc_per_node=N -m train.prior ...`` runs DDP.

runs/NAME/
  prior.safetensors, prior.json    latest weights (vqvae.load_prior reads them)
  train_config.json, checkpoint.pt, metrics.jsonl, summary.json   as for python -m train
  codes-<dataset>-<fingerprint>.npz  the encoded splits (int16 codes + labels)
  samples/step_NNNNNN.png          decoded samples, a row per class
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import vqvae
from vqvae.data import DATASETS, DatasetNotFoundError, load_labels, load_uint8, spread
from vqvae.files import atomic_write, write_json_atomic
from vqvae.prior import CodePrior, PriorConfig, codebook_fingerprint, load_prior

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
from .train import StopFlag, TrainError, hardware, lr_at, resolve_device, setup_distributed

ROOT = Path(__file__).resolve().parent.parent

# Per-dataset presets. MNIST and Fashion-MNIST (7x7 codes) are sized for a 2-core CPU:
# about 0.4 s a step there, so 6000 steps fit in under an hour, and 16 samples take about
# 0.2 s (on an idle machine). CIFAR-10 (8x8 codes of natural images) wants a larger network
# and is meant for a GPU (25 epochs; not yet tuned: watch the periodic test NLL for overfitting);
# cifar10-cpu is what fits a CPU.
_SMALL = dict(d_model=192, n_layers=6, n_heads=6, dropout=0.1, steps=6_000, batch_size=64,
              lr=1e-3)  # fmt: skip
PRIOR_PRESETS: dict[str, dict] = {
    "mnist": _SMALL,
    "fashion-mnist": _SMALL,
    "cifar10": dict(
        d_model=256, n_layers=8, n_heads=8, dropout=0.1, steps=20_000, batch_size=128, lr=6e-4
    ),  # fmt: skip
    # CIFAR-10 on a 2-core CPU (the shipped cifar10 prior): the MNIST network, no dropout
    # (it sees the data about 8 times, too few to overfit), about 0.75 s a step when idle.
    "cifar10-cpu": dict(
        d_model=192, n_layers=6, n_heads=6, dropout=0.0, steps=6_000, batch_size=64, lr=1e-3
    ),  # fmt: skip
    "folder": dict(
        d_model=256, n_layers=6, n_heads=8, dropout=0.1, steps=10_000, batch_size=64, lr=6e-4
    ),  # fmt: skip
}


@dataclass
class PriorTrainConfig:
    vqvae: str = "mnist"  # pretrained name or folder of the VQ-VAE whose codes are modelled
    dataset: str = "mnist"
    data_dir: str = "data"
    out: str = "runs/prior-mnist"
    conditional: bool = True  # class token from the dataset's labels
    label_dropout: float = 0.1  # labels replaced by the null class: the unconditional prior
    # the transformer
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 6
    dropout: float = 0.1
    # optimisation
    steps: int = 6_000
    batch_size: int = 64  # per process
    lr: float = 1e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay to lr * this
    weight_decay: float = 0.05  # on weight matrices only
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    # machinery
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    limit_train: int = 0  # use only N training grids, evenly spread (tests, quick looks)
    limit_test: int = 0
    log_every: int = 50
    eval_every: int = 1_000
    eval_images: int = 2_000  # test grids for the periodic NLL (the final one uses all)
    ckpt_every: int = 500
    sample_every: int = 1_000

    @property
    def total_steps(self) -> int:  # what train.train.lr_at reads
        return self.steps


# ----------------------------------------------------------------------------- options
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.prior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vqvae", help="pretrained model name or folder (default mnist)")
    p.add_argument("--dataset", choices=DATASETS, help="default: the VQ-VAE's name")
    p.add_argument("--preset", choices=sorted(PRIOR_PRESETS), help="default: the dataset")
    p.add_argument("--data-dir", help="dataset root (e.g. ../shared/data); default ./data")
    p.add_argument("--out", help="run folder (default runs/prior-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--conditional", action=bool_flag, help="class-conditional (default on)")
    p.add_argument("--label-dropout", type=float)
    for name in ("d-model", "n-layers", "n-heads"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="code grids per step per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action=bool_flag, help="bf16 autocast on CUDA (default on)")
    p.add_argument("--limit-train", type=int, help="use only N training images, evenly spread")
    p.add_argument("--limit-test", type=int, help="use only N test images, evenly spread")
    for name in ("log-every", "eval-every", "eval-images", "ckpt-every", "sample-every"):
        p.add_argument(f"--{name}", type=int)
    return p.parse_args(argv)


# options a resumed run may change; everything else is the run's own
RESUMABLE = ("steps", "device", "data_dir", "log_every", "eval_every", "ckpt_every",
             "sample_every")  # fmt: skip


def build_config(args: argparse.Namespace) -> PriorTrainConfig:
    """Defaults <- preset (by dataset) <- explicit flags."""
    fields = {f.name for f in dataclasses.fields(PriorTrainConfig)}
    if args.resume:
        out = Path(args.out or "runs/prior-mnist")
        saved = read_train_config(out)
        if saved is None:
            raise RunError(f"cannot resume: {out} is not a run folder (no {TRAIN_CONFIG})")
        values = {k: v for k, v in saved.items() if k in fields}
        values["out"] = str(out)  # the folder resumed, also when it was moved since
        values.update({k: getattr(args, k) for k in RESUMABLE if getattr(args, k) is not None})
        return check_config(PriorTrainConfig(**values))
    name = args.vqvae or "mnist"
    dataset = args.dataset
    if dataset is None:
        dataset = _model_name(name)
        if dataset not in DATASETS:
            raise TrainError(
                f"the VQ-VAE {name!r} is not named after a dataset; pass --dataset "
                f"({', '.join(DATASETS)})"
            )
    preset = args.preset or dataset
    values = dict(vqvae=name, dataset=dataset, out=f"runs/prior-{dataset}", **PRIOR_PRESETS[preset])
    for k, v in vars(args).items():
        if k in fields and v is not None:
            values[k] = v
    return check_config(PriorTrainConfig(**values))


def _model_name(name_or_dir: str) -> str:
    try:
        folder = vqvae.resolve_pretrained(name_or_dir)
    except FileNotFoundError as e:
        raise TrainError(str(e)) from e
    return vqvae.VQVAEConfig.from_json(folder / "config.json").name


def check_config(cfg: PriorTrainConfig) -> PriorTrainConfig:
    if cfg.steps < 0 or cfg.batch_size < 1:
        raise TrainError("--steps must be >= 0 and --batch-size >= 1")
    if not 0.0 <= cfg.label_dropout < 1.0:
        raise TrainError(f"--label-dropout must be in [0, 1), got {cfg.label_dropout}")
    for k in ("log_every", "eval_every", "ckpt_every", "sample_every", "eval_images"):
        if getattr(cfg, k) < 1:
            raise TrainError(f"--{k.replace('_', '-')} must be >= 1")
    return cfg


# ----------------------------------------------------------------------------- the codes
@torch.no_grad()
def encode_split(model, images_u8: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Codes int16 (N, h, w) of uint8 images, in float32 (no autocast: exact nearest codes)."""
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i : i + batch_size].to(model.device).float() / 255.0
        out.append(model.encode(x).to("cpu", torch.int16))
    return torch.cat(out)


def code_cache_path(out: Path, dataset: str, fingerprint: str) -> Path:
    return Path(out) / f"codes-{dataset}-{fingerprint}.npz"


def encoded_splits(model, dataset: str, data_dir, out: Path, progress: bool = True) -> dict:
    """The train and test splits as codes + labels, encoded once and cached in ``out``.
    Returns tensors train_codes / test_codes int64 (N, h, w), train_labels / test_labels
    int64 (N,), and class_names, data_source."""
    fp = codebook_fingerprint(model)
    path = code_cache_path(out, dataset, fp)
    if not path.is_file():
        c = model.config
        arrays = {}
        for split in ("train", "test"):
            images, info = load_uint8(
                dataset, data_dir, split, image_size=c.image_size, channels=c.in_channels
            )
            labels, names = load_labels(dataset, data_dir, split)
            if len(labels) != len(images):
                raise TrainError(f"{dataset} {split}: {len(images)} images, {len(labels)} labels")
            if progress:
                print(f"encoding the {split} split ({len(images)} images) ...", flush=True)
            try:
                codes = encode_split(model, images)
            except ValueError as e:  # images of another shape than the VQ-VAE takes
                raise TrainError(f"the VQ-VAE cannot encode {dataset}: {e}") from e
            arrays[f"{split}_codes"] = codes.numpy()
            arrays[f"{split}_labels"] = labels.numpy().astype(np.int16)
        arrays["class_names"] = np.array(names, dtype=np.str_)
        arrays["data_source"] = np.array(info.source, dtype=np.str_)
        Path(out).mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    with np.load(path, allow_pickle=False) as d:
        result = {k: torch.from_numpy(d[k]).long() for k in d.files if "codes" in k or "lab" in k}
        result["class_names"] = [str(x) for x in d["class_names"]]
        result["data_source"] = str(d["data_source"])
    return result


def unigram_bits(codes: torch.Tensor, K: int) -> float:
    """Bits per grid of a model that ignores context: h*w times the entropy of the codes'
    usage over ``codes`` (N, h, w) itself (an optimistic baseline: fitted to these codes)."""
    p = torch.bincount(codes.flatten(), minlength=K).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum()) * codes[0].numel()


@torch.no_grad()
def test_nll(prior, codes: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> dict:
    """Mean bits per grid of ``codes`` under ``prior``: with their labels (when the prior is
    conditional) and without (the null class)."""
    was_training = prior.training
    prior.eval()
    sums = dict(cond=0.0, uncond=0.0)
    for i in range(0, len(codes), batch_size):
        c = codes[i : i + batch_size].to(prior.device)
        sums["uncond"] += float(prior.nll_bits(c).double().sum())
        if prior.num_classes:
            sums["cond"] += float(prior.nll_bits(c, labels[i : i + batch_size]).double().sum())
    prior.train(was_training)
    n = max(1, len(codes))
    bits = (sums["cond"] if prior.num_classes else sums["uncond"]) / n
    return {"bits_per_image": bits, "bits_unconditional": sums["uncond"] / n, "num_images": n}


class CodeBatches:
    """Real epochs over shuffled code grids, the order a function of (seed, epoch) alone (as
    train.train.Batches): a resumed run sees exactly the batches it would have seen."""

    def __init__(self, codes, labels, batch_size: int, seed: int, rank: int, world: int):
        self.codes, self.labels = codes, labels
        self.bs, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.per_epoch = len(codes) // (batch_size * world)
        if self.per_epoch == 0:
            raise TrainError(
                f"{len(codes)} training grids are fewer than one batch of "
                f"{batch_size * world}; lower --batch-size"
            )
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.codes), generator=g).to(self.codes.device)
            self._epoch = epoch
        start = (pos * self.world + self.rank) * self.bs
        pick = self._perm[start : start + self.bs]
        return self.codes[pick], self.labels[pick]


# ----------------------------------------------------------------------------- setting up
def load_vqvae(cfg: PriorTrainConfig, dev: torch.device, ckpt: dict | None):
    """(the VQ-VAE whose codes are modelled, its codebook fingerprint); a resumed run must
    find the VQ-VAE it started with."""
    try:
        model = vqvae.load_pretrained(cfg.vqvae, device=dev)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(f"cannot load the VQ-VAE: {e}") from e
    fingerprint = codebook_fingerprint(model)
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        raise TrainError(
            f"the VQ-VAE {cfg.vqvae!r} changed since this run started (its codebook differs); "
            f"the run's codes belong to the old one. Start a new run with another --out."
        )
    return model, fingerprint


def load_codes(cfg: PriorTrainConfig, model, rank: int, world: int) -> dict:
    """``encoded_splits`` cut to --limit-train / --limit-test. Rank 0 encodes (once, into the
    run folder's cache); the other ranks wait for it and read the cache."""
    out = Path(cfg.out)
    try:
        if rank == 0:
            data = encoded_splits(model, cfg.dataset, cfg.data_dir, out)
        if world > 1:
            dist.barrier()
        if rank != 0:
            data = encoded_splits(model, cfg.dataset, cfg.data_dir, out, progress=False)
    except ValueError as e:
        raise TrainError(str(e)) from e
    # evenly spread subsets: a split may be sorted by class (CIFAR-10's copy is)
    for split, limit in (("train", cfg.limit_train), ("test", cfg.limit_test)):
        pick = spread(len(data[f"{split}_codes"]), limit)
        data[f"{split}_codes"] = data[f"{split}_codes"][pick]
        data[f"{split}_labels"] = data[f"{split}_labels"][pick]
    return data


def build_prior(cfg: PriorTrainConfig, model, class_names: list[str], dev: torch.device):
    """(the prior over ``model``'s codes, seeded by --seed; AdamW with weight decay on the
    weight matrices only)."""
    pcfg = PriorConfig.for_model(
        model,
        num_classes=len(class_names),
        class_names=class_names,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
    )
    torch.manual_seed(cfg.seed)
    prior = CodePrior(pcfg).to(dev)
    decay = [p for p in prior.parameters() if p.dim() >= 2]
    no_decay = [p for p in prior.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    return prior, opt


# ----------------------------------------------------------------------------- run state
@dataclass
class PriorRunState(RunClock):
    """What the loop's helpers share: options, the VQ-VAE, the prior and its optimizer, the
    test codes, where the run is, and its metrics file (rank 0 only)."""

    cfg: PriorTrainConfig
    model: vqvae.VQVAE  # decodes the sample grids
    prior: CodePrior
    opt: torch.optim.Optimizer
    dev: torch.device
    rank: int
    world: int
    fingerprint: str  # of the VQ-VAE's codebook, checked on resume
    test_codes: torch.Tensor  # int64 (N, h, w), on the CPU
    test_labels: torch.Tensor  # int64 (N,)
    baselines: dict  # uniform_bits and unigram_bits of the test codes, in every eval record
    net: torch.nn.Module | None = None  # what the step calls: the prior, or its DDP wrapper
    step: int = 0
    elapsed: float = 0.0  # seconds trained before this process started
    started: float = field(default_factory=time.time)
    log: IO | None = None
    window: tuple[int, float] = (0, 0.0)  # (step, time) of the last log line, for grids/s

    @property
    def amp(self) -> bool:  # bf16 autocast
        return self.cfg.amp and self.dev.type == "cuda"


def restore_checkpoint(state: PriorRunState, ckpt: dict) -> None:
    """Continue where ``ckpt`` (save_checkpoint's) left off: weights, optimizer, step,
    time and the RNG (dropout, label dropout), so the run goes on bit for bit."""
    state.prior.load_state_dict(ckpt["prior"])
    state.opt.load_state_dict(ckpt["optimizer"])
    state.step, state.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if state.dev.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], state.dev)
    if state.main:  # a killed run logged past its checkpoint: those lines come again
        truncate_metrics(state.out, state.step, kmeans_done=True)


def training_module(state: PriorRunState) -> torch.nn.Module:
    """The prior, wrapped in DistributedDataParallel under torchrun."""
    if state.world == 1:
        return state.prior
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = state.dev
    return DDP(state.prior, device_ids=[dev.index] if dev.type == "cuda" else None)


def open_logs(state: PriorRunState, data_source: str) -> None:
    """Rank 0: the options (train_config.json) and metrics.jsonl."""
    out = state.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    run_info = {"data_source": data_source, "world_size": state.world,
                "fingerprint": state.fingerprint}  # fmt: skip
    write_json_atomic(out / TRAIN_CONFIG, {**dataclasses.asdict(state.cfg), **run_info}, indent=2)
    state.log = open(out / METRICS, "a")


def emit(state: PriorRunState, record: dict) -> None:
    """One line of metrics.jsonl; rank 0 only."""
    state.write_metrics(record)


# ----------------------------------------------------------------------------- the loop's steps
def prior_step(state: PriorRunState, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One optimisation step on code grids ``codes`` int64 (B, h, w) with class ``labels``
    int64 (B,): labels dropped to the null class with probability --label-dropout, forward
    (bf16 autocast on CUDA), cross-entropy, backward, clipping, optimizer step. Returns the
    loss (nats per code), still on the device."""
    cfg, prior = state.cfg, state.prior
    if prior.config.num_classes:
        dropped = torch.rand(len(labels), device=labels.device) < cfg.label_dropout
        labels = torch.where(dropped, -1, labels)
    else:
        labels = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=state.amp):
        logits = state.net(codes, labels)
    loss = F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
    state.opt.step()
    return loss


def log_step(state: PriorRunState, loss: torch.Tensor) -> dict:
    """The step's metrics line (reads the loss back from the device); a non-finite loss
    stops the run."""
    value = loss.detach().item()
    if not math.isfinite(value):
        raise TrainError(
            f"loss became {value} at step {state.step}; the last good checkpoint in "
            f"{state.out} is kept. Try a lower --lr."
        )
    now, (last_step, last_time) = time.time(), state.window
    grids = (state.step - last_step) * state.cfg.batch_size * state.world
    record = {
        "step": state.step,
        "loss": value,
        "bits_per_image": value * state.prior.config.seq_len / math.log(2),
        "lr": state.opt.param_groups[0]["lr"],
        "grids_per_s": grids / max(now - last_time, 1e-9),
    }
    emit(state, record)
    state.window = (state.step, time.time())
    return record


def evaluate_now(state: PriorRunState, *, final: bool = False) -> dict:
    """Test NLL (--eval-images test grids evenly spread over the split, or all of them when
    ``final``) with the baselines, written to metrics.jsonl."""
    pick = spread(len(state.test_codes), 0 if final else state.cfg.eval_images)
    ev = test_nll(state.prior, state.test_codes[pick], state.test_labels[pick])
    ev = {**ev, "bits_per_code": ev["bits_per_image"] / state.prior.config.seq_len,
          **state.baselines}  # fmt: skip
    record = {"step": state.step, "eval": ev}
    emit(state, {**record, "final": True} if final else record)
    return ev


def save_samples(state: PriorRunState) -> None:
    """samples/step_NNNNNN.png: 8 samples per class (a row each) or 64 unconditional ones,
    decoded; drawn with their own generator, so the training RNG is untouched."""
    from torchvision.utils import save_image

    prior, num_classes = state.prior, state.prior.config.num_classes
    g = torch.Generator(state.dev).manual_seed(state.cfg.seed)
    labels = torch.arange(num_classes).repeat_interleave(8) if num_classes else None
    prior.eval()
    codes = prior.sample(len(labels) if labels is not None else 64, labels, generator=g)
    prior.train()
    images = state.model.decode(codes).float().cpu()
    path = state.out / "samples" / f"step_{state.step:06d}.png"
    save_image(images, path, nrow=8, pad_value=1.0)


def save_checkpoint(state: PriorRunState) -> None:
    """checkpoint.pt (everything --resume needs; the one before it is kept as the fallback)
    and the latest weights (prior.safetensors + prior.json, loadable by vqvae.load_prior)."""
    # checked on every rank: DDP keeps the weights equal, so all ranks stop together
    bad = [n for n, p in state.prior.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise TrainError(
            f"weights became NaN/inf at step {state.step} ({bad[0]}); the last good "
            f"checkpoint in {state.out} is kept. Try a lower --lr."
        )
    if not state.main:
        return
    dev = state.dev
    checkpoint = {
        "prior": {k: v.detach().cpu() for k, v in state.prior.state_dict().items()},
        "optimizer": state.opt.state_dict(),
        "step": state.step,
        "elapsed": state.seconds(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "fingerprint": state.fingerprint,
        "train_config": json.dumps(dataclasses.asdict(state.cfg)),
    }
    save_checkpoint_file(checkpoint, state.out)
    state.prior.save_pretrained(state.out)


def stop_agreed(state: PriorRunState, stop) -> bool:
    """Whether to stop after this step (``stop.requested`` is read once a step). Under DDP
    every rank must stop at the same step: they agree at log steps only."""
    requested = stop.requested
    if state.world == 1:
        return requested
    if state.step % state.cfg.log_every:
        return False
    flag = torch.tensor([float(requested)], device=state.dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# ----------------------------------------------------------------------------- the run
def run(cfg: PriorTrainConfig, resume: bool = False, stop=None) -> dict:
    """Train as ``cfg`` says; returns the summary. ``stop`` replaces the Ctrl-C handler
    (an object with ``.requested``, read once a step, and ``.restore()``)."""
    rank, world, local_rank = setup_distributed()
    dev = resolve_device(cfg.device, local_rank)

    # resume or start fresh, never overwriting a run by accident
    ckpt, finished = start_or_resume(Path(cfg.out), resume, cfg.steps, announce=rank == 0)
    if finished is not None:  # nothing to train: every file stays as it is
        return finished

    # the VQ-VAE, its codes and the prior
    model, fingerprint = load_vqvae(cfg, dev, ckpt)
    data = load_codes(cfg, model, rank, world)
    train_codes, train_labels = data["train_codes"].to(dev), data["train_labels"].to(dev)
    prior, opt = build_prior(cfg, model, data["class_names"] if cfg.conditional else [], dev)
    test_codes = data["test_codes"]
    baselines = {
        "uniform_bits": prior.config.uniform_bits,
        "unigram_bits": unigram_bits(test_codes, prior.config.codebook_size),
    }
    state = PriorRunState(
        cfg=cfg, model=model, prior=prior, opt=opt, dev=dev, rank=rank, world=world,
        fingerprint=fingerprint, test_codes=test_codes, test_labels=data["test_labels"],
        baselines=baselines,
    )  # fmt: skip
    if ckpt is not None:
        restore_checkpoint(state, ckpt)
    state.net = training_module(state)
    batches = CodeBatches(train_codes, train_labels, cfg.batch_size, cfg.seed, rank, world)
    if state.main:
        open_logs(state, data["data_source"])

    from tqdm.auto import tqdm

    stop = stop or StopFlag()
    state.started = time.time()
    bar = tqdm(total=cfg.steps, initial=state.step, disable=not state.main, dynamic_ncols=True,
               desc="prior")  # fmt: skip
    state.window = (state.step, time.time())
    prior.train()
    try:
        if state.main and state.step == 0 and not resume:
            evaluate_now(state)
        while state.step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, state.step)
            codes, labels = batches(state.step)
            loss = prior_step(state, codes, labels)
            state.step += 1
            step = state.step
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = log_step(state, loss)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", bits=f"{rec['bits_per_image']:.1f}")
            if state.main and step % cfg.eval_every == 0 and step < cfg.steps:
                ev = evaluate_now(state)
                bar.write(
                    f"step {step}: test {ev['bits_per_image']:.1f} bits/image "
                    f"(unigram {ev['unigram_bits']:.1f}, uniform {ev['uniform_bits']:.0f})"
                )
            if state.main and step % cfg.sample_every == 0 and step < cfg.steps:
                save_samples(state)
            stopping = stop_agreed(state, stop)
            if step % cfg.ckpt_every == 0 or stopping:
                save_checkpoint(state)
            if stopping:
                break
    finally:
        bar.close()
        stop.restore()
    return finish(state, data["data_source"])


def finish(state: PriorRunState, data_source: str) -> dict:
    """The last checkpoint, samples and full test evaluation of a completed run; the summary
    (also of an interrupted one)."""
    cfg, out = state.cfg, state.out
    interrupted = state.step < cfg.steps
    final_eval = None
    if not interrupted:
        save_checkpoint(state)
        if state.main:
            save_samples(state)
            final_eval = evaluate_now(state, final=True)
    summary = {
        "step": state.step,
        "total_steps": cfg.steps,
        "interrupted": interrupted,
        "elapsed_s": round(state.seconds(), 1),
        "device": str(state.dev),
        "hardware": hardware(state.dev),
        "world_size": state.world,
        "data_source": data_source,
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in state.prior.parameters()),
        "final_eval": final_eval,
    }
    if state.main:
        write_json_atomic(out / "summary.json", summary, indent=2)
        state.log.close()
        if interrupted:
            print(
                f"stopped at step {state.step}; checkpoint saved. Continue with: "
                f"python -m train.prior --out {out} --resume",
                file=sys.stderr,
            )
        else:
            print(
                f"done: {state.step} steps in {summary['elapsed_s']:.0f} s; test "
                f"{final_eval['bits_per_image']:.1f} bits/image (unigram "
                f"{final_eval['unigram_bits']:.1f}, uniform {final_eval['uniform_bits']:.0f}); "
                f"prior in {out}"
            )
    if state.world > 1:
        dist.barrier()
    return summary


# ----------------------------------------------------------------------------- export
CARD_START, CARD_END = "<!-- prior -->", "<!-- /prior -->"
CARD = """{start}
## Prior

A {kind} autoregressive transformer over the {h}x{w} codes ({layers} layers, width
{d_model}, {params:.2f} M parameters), trained with `python -m train.prior` for {steps} steps
({time}, {hardware}). Load it with

```python
prior = vqvae.load_prior("{name}")
codes = prior.sample(16{label_arg}, temperature=1.0)  # (16, {h}, {w}) int64
images = model.decode(codes)
```

| test split ({num_images} images, {data_source}) | bits per image |
|---|---|
| under the prior{cond_note} | **{bits:.1f}** ({per_code:.2f} per code) |
{uncond_row}| unigram (entropy of code usage, ignores context) | {unigram:.1f} |
| uniform (h*w*log2 K) | {uniform:.0f} |
{end}"""


def export(
    run_dir: Path,
    name: str,
    out_root: Path = ROOT / "pretrained",
    data_dir: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the run's prior into ``out_root/name`` (which holds its VQ-VAE): prior.safetensors,
    prior.json, prior_metrics.json (test NLL over the whole split) and a section of the model
    card README.md (replaced on a second export)."""
    run_dir = Path(run_dir)
    tc = read_train_config(run_dir)
    if tc is None:
        raise RunError(f"{run_dir} is not a prior training run (no {TRAIN_CONFIG})")
    folder = Path(out_root) / name
    model = vqvae.load_pretrained(folder)
    prior = load_prior(run_dir, model=model)  # a prior for another model: a clear ValueError
    data = encoded_splits(model, tc["dataset"], data_dir or tc["data_dir"], run_dir)
    prior.save_pretrained(folder, dtype=dtype)
    prior = load_prior(folder, model=model)  # the figures are those of the file as written
    ev = test_nll(prior, data["test_codes"], data["test_labels"])
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    c = prior.config
    metrics = {
        "model": name,
        "dataset": tc["dataset"],
        "split": "test",
        "data_source": data["data_source"],
        **ev,
        "bits_per_code": ev["bits_per_image"] / c.seq_len,
        "uniform_bits": c.uniform_bits,
        "unigram_bits": unigram_bits(data["test_codes"], c.codebook_size),
        "num_classes": c.num_classes,
        "parameters": sum(p.numel() for p in prior.parameters()),
        "steps": summary.get("step"),
        "elapsed_s": summary.get("elapsed_s"),
        "hardware": summary.get("hardware"),
    }
    metrics["ratio_to_unigram"] = metrics["bits_per_image"] / metrics["unigram_bits"]
    metrics["weights_dtype"] = dtype
    write_json_atomic(folder / "prior_metrics.json", metrics, indent=2)
    secs = metrics["elapsed_s"]
    section = CARD.format(
        start=CARD_START,
        end=CARD_END,
        kind="class-conditional" if c.num_classes else "unconditional",
        h=c.height,
        w=c.width,
        layers=c.n_layers,
        d_model=c.d_model,
        params=metrics["parameters"] / 1e6,
        steps=metrics["steps"] or "?",
        time=f"{secs / 60:.0f} min" if secs else "time not recorded",
        hardware=metrics["hardware"] or "hardware not recorded",
        name=name,
        label_arg=", labels=0" if c.num_classes else "",
        num_images=ev["num_images"],
        data_source=data["data_source"],
        cond_note=", given the class" if c.num_classes else "",
        bits=ev["bits_per_image"],
        per_code=metrics["bits_per_code"],
        uncond_row=f"| under the prior, without the class | {ev['bits_unconditional']:.1f} |\n"
        if c.num_classes
        else "",
        unigram=metrics["unigram_bits"],
        uniform=c.uniform_bits,
    )
    card = folder / "README.md"
    text = card.read_text() if card.is_file() else ""
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        text = head + section + rest.split(CARD_END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    with atomic_write(card, "w") as f:
        f.write(text)
    print(
        f"wrote the prior into {folder}: {ev['bits_per_image']:.1f} bits/image on the test "
        f"split (unigram {metrics['unigram_bits']:.1f}, uniform {c.uniform_bits:.0f})"
    )
    return folder


def export_main(argv) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.prior export",
        description="Write a trained prior into pretrained/NAME/ beside its VQ-VAE.",
    )
    p.add_argument("run", help="prior training run folder")
    p.add_argument("--name", required=True, help="the model's folder name under --out-root")
    p.add_argument("--out-root", default=str(ROOT / "pretrained"))
    p.add_argument("--data-dir", help="dataset root (default: the run's; used if not cached)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="float16 halves the weights file; the figures are measured on the file as written",
    )
    a = p.parse_args(argv)
    try:
        export(Path(a.run), a.name, Path(a.out_root), a.data_dir, dtype=a.dtype)
    except (RunError, FileNotFoundError, ValueError, TrainError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    args = parse_args(argv)
    try:
        summary = run(build_config(args), resume=args.resume)
    except (TrainError, RunError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary["interrupted"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
