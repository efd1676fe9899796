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
  codes-<dataset>-<fingerprint>.npz  the encoded splits (int16 codes + labels; keyed by the
                                     encoder and codebooks: grid_prior.encoding_fingerprint)
  samples/step_NNNNNN.png          decoded samples, a row per class
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import vqvae
from vqvae.data import DATASETS, load_labels, load_uint8, spread
from vqvae.files import atomic_write
from vqvae.grid_prior import encoding_fingerprint
from vqvae.prior import CodePrior, PriorConfig, codebook_fingerprint

from . import loop, options
from .options import TrainError, option
from .runs import start_or_resume

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
    """Every option of a prior's training run; each field is a ``--flag`` of
    ``python -m train.prior``."""

    vqvae: str = option("mnist", "pretrained name or folder of the VQ-VAE whose codes are modelled")
    dataset: str = option("mnist", "training data", choices=DATASETS)
    data_dir: str = option("data", "dataset root, e.g. ../shared/data", resume=True)
    out: str = option("runs/prior-mnist", "run folder (default runs/prior-DATASET)", resume=True)
    conditional: bool = option(True, "class-conditional: a class token from the dataset's labels")
    label_dropout: float = option(
        0.1, "labels replaced by the null class with this probability: the unconditional prior"
    )
    # the transformer
    d_model: int = option(192, "transformer width")
    n_layers: int = option(6, "transformer layers")
    n_heads: int = option(6, "attention heads")
    dropout: float = option(0.1, "dropout probability")
    # optimisation
    steps: int = option(6_000, "training steps", resume=True)
    batch_size: int = option(64, "code grids per step per process")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(200, "linear learning-rate warm-up steps")
    min_lr_ratio: float = option(0.1, "the cosine decay ends at lr times this")
    weight_decay: float = option(0.05, "AdamW weight decay, on weight matrices only")
    grad_clip: float = option(1.0, "clip the gradient norm to this; 0 = off")
    seed: int = option(0, "seed of the initial weights, data order, label dropout and samples")
    # machinery
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", resume=True)
    amp: bool = option(True, "bf16 autocast on CUDA")
    limit_train: int = option(0, "use only N training grids, evenly spread (0 = all)")
    limit_test: int = option(0, "use only N test grids, evenly spread (0 = all)")
    log_every: int = option(50, "steps between log lines", resume=True)
    eval_every: int = option(1_000, "steps between test evaluations", resume=True)
    eval_images: int = option(2_000, "test grids of a periodic evaluation (the final one uses all)")
    ckpt_every: int = option(500, "steps between checkpoints", resume=True)
    sample_every: int = option(1_000, "steps between sample grids", resume=True)

    @property
    def total_steps(self) -> int:  # what the loop reads
        return self.steps


# ----------------------------------------------------------------------------- options
def make_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per PriorTrainConfig field, plus --preset and --resume."""
    defaults = {
        **{k: " (default: set by --preset)" for k in _SMALL},
        "dataset": " (default: the VQ-VAE's name)",
        "out": "",
    }
    p = options.make_parser(PriorTrainConfig, "python -m train.prior", __doc__, defaults)
    p.add_argument("--preset", choices=sorted(PRIOR_PRESETS), help="default: the dataset")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def build_config(args: argparse.Namespace) -> PriorTrainConfig:
    """Defaults <- preset (by dataset) <- explicit flags; a resumed run's saved options with
    the flags a resume may change."""
    given = options.given(PriorTrainConfig, args)
    if args.resume:
        out = Path(args.out or "runs/prior-mnist")
        return check_config(PriorTrainConfig(**options.resumed(PriorTrainConfig, out, given)))
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
    return check_config(PriorTrainConfig(**{**values, **given}))


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
    options.at_least_one(cfg, ("log_every", "eval_every", "ckpt_every", "sample_every",
                               "eval_images"))  # fmt: skip
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
    path = code_cache_path(out, dataset, encoding_fingerprint(model))
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


class CodeBatches(loop.Epochs):
    """Real epochs over shuffled code grids and their labels (loop.Epochs, as
    train.train.Batches): a resumed run sees exactly the batches it would have seen."""

    def __init__(self, codes, labels, batch_size: int, seed: int, rank: int, world: int):
        super().__init__(len(codes), batch_size, seed, rank, world, codes.device,
                         "training grids")  # fmt: skip
        self.codes, self.labels = codes, labels

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pick = self.indices(step)
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

    def load():
        try:
            return encoded_splits(model, cfg.dataset, cfg.data_dir, cfg.out, progress=rank == 0)
        except ValueError as e:
            raise TrainError(str(e)) from e

    data = loop.first_on_rank_0(load, rank, world)
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
@dataclass(kw_only=True)
class PriorRunState(loop.Run):
    """The loop's state (train.loop.Run) with the VQ-VAE, the prior and the codes."""

    prog, weights = "train.prior", "prior"

    model: vqvae.VQVAE  # decodes the sample grids
    prior: CodePrior
    fingerprint: str  # of the VQ-VAE's codebook, checked on resume
    test_codes: torch.Tensor  # int64 (N, h, w), on the CPU
    test_labels: torch.Tensor  # int64 (N,)
    baselines: dict  # uniform_bits and unigram_bits of the test codes, in every eval record
    batches: CodeBatches | None = None
    net: torch.nn.Module | None = None  # what the step calls: the prior, or its DDP wrapper

    @property
    def amp(self) -> bool:  # bf16 autocast
        return self.cfg.amp and self.dev.type == "cuda"

    def take_step(self) -> torch.Tensor:
        codes, labels = self.batches(self.step)
        return prior_step(self, codes, labels)

    def log_step(self, loss: torch.Tensor) -> None:
        """The step's metrics line (reads the loss back from the device)."""
        value = loop.finite(self, loss.detach().item())
        record = {
            "step": self.step,
            "loss": value,
            "bits_per_image": value * self.prior.config.seq_len / math.log(2),
            "lr": self.opt.param_groups[0]["lr"],
            "grids_per_s": loop.per_second(self, self.cfg.batch_size),
        }
        loop.emit(self, record)
        self.bar.set_postfix(loss=f"{value:.3f}", bits=f"{record['bits_per_image']:.1f}")

    def evaluate(self, final: bool = False) -> dict:
        """Test NLL (--eval-images test grids evenly spread over the split, or all of them when
        ``final``) with the baselines."""
        pick = spread(len(self.test_codes), 0 if final else self.cfg.eval_images)
        ev = test_nll(self.prior, self.test_codes[pick], self.test_labels[pick])
        ev = {**ev, "bits_per_code": ev["bits_per_image"] / self.prior.config.seq_len,
              **self.baselines}  # fmt: skip
        loop.emit_eval(self, ev, final)
        if not final:
            tqdm.write(
                f"step {self.step}: test {ev['bits_per_image']:.1f} bits/image "
                f"(unigram {ev['unigram_bits']:.1f}, uniform {ev['uniform_bits']:.0f})"
            )
        return ev

    def save_samples(self) -> None:
        """samples/step_NNNNNN.png: 8 samples per class (a row each) or 64 unconditional ones,
        decoded; drawn with their own generator, so the training RNG is untouched."""
        from torchvision.utils import save_image

        prior, num_classes = self.prior, self.prior.config.num_classes
        g = torch.Generator(self.dev).manual_seed(self.cfg.seed)
        labels = torch.arange(num_classes).repeat_interleave(8) if num_classes else None
        prior.eval()
        codes = prior.sample(len(labels) if labels is not None else 64, labels, generator=g)
        prior.train()
        images = self.model.decode(codes).float().cpu()
        save_image(images, loop.sample_path(self), nrow=8, pad_value=1.0)

    def checkpoint(self) -> dict:
        return {"fingerprint": self.fingerprint}  # load_vqvae checks it on resume

    def report(self, summary: dict) -> str:
        ev = summary["final_eval"]
        return (
            f"done: {self.step} steps in {summary['elapsed_s']:.0f} s; test "
            f"{ev['bits_per_image']:.1f} bits/image (unigram {ev['unigram_bits']:.1f}, "
            f"uniform {ev['uniform_bits']:.0f}); prior in {self.out}"
        )


# ----------------------------------------------------------------------------- one step
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


# ----------------------------------------------------------------------------- the run
def run(cfg: PriorTrainConfig, resume: bool = False, stop=None) -> dict:
    """Train as ``cfg`` says; returns the summary. ``stop`` replaces the Ctrl-C handler
    (an object with ``.requested``, read once a step, and ``.restore()``)."""
    rank, world, local_rank = loop.setup_distributed()
    dev = loop.resolve_device(cfg.device, local_rank)

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
        cfg=cfg, opt=opt, dev=dev, rank=rank, world=world, model=model, prior=prior,
        fingerprint=fingerprint, test_codes=test_codes, test_labels=data["test_labels"],
        baselines=baselines,
    )  # fmt: skip
    if ckpt is not None:
        loop.restore(state, ckpt)
    state.net = loop.ddp(prior, dev) if world > 1 else prior
    state.batches = CodeBatches(train_codes, train_labels, cfg.batch_size, cfg.seed, rank, world)
    if state.main:
        info = {"data_source": data["data_source"], "world_size": world, "fingerprint": fingerprint}
        loop.open_logs(state, info)

    prior.train()
    if state.main and state.step == 0 and not resume:
        state.evaluate()  # the untrained prior: where the test NLL starts
    loop.train_loop(state, stop, desc="prior")
    parameters = sum(p.numel() for p in prior.parameters())
    return loop.finish(state, data["data_source"], parameters=parameters)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        from .prior_export import export_main

        return export_main(argv[1:])
    args = parse_args(argv)
    out = args.out or f"runs/prior-{args.dataset or 'mnist'}"
    loop.cli("train.prior", out, lambda: run(build_config(args), resume=args.resume))


if __name__ == "__main__":
    main()
