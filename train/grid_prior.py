"""python -m train.grid_prior: train a grid prior (vqvae.grid_prior.GridPrior) over a VQ-VAE's
codes, every stage of its residual quantizer, for code grids of any size.

python -m train.grid_prior --vqvae runs/cifar10-rvq4 --data-dir data --out runs/grid-prior
python -m train.grid_prior --out runs/grid-prior --resume        # continue exactly

Photos at their own resolution are smoother per code cell than 32 x 32 thumbnails, so the
codes are taken from the training images at their size and upscaled (--scales, bicubic),
grids of each scale in turn. Every evaluation reports bits per code on the test split and
on the photo suite (scikit-image's photos, never trained on): the gap between the two is
what the upscaled grids are there to close. At the end the prior is frozen to its integer
network (calibrated on training grids) and written with ``save_pretrained``.

runs/NAME/
  grid_prior.safetensors, grid_prior.json   the prior (frozen at the end)
  train_config.json, checkpoint.pt, metrics.jsonl, summary.json   as for python -m train
  codes-<fingerprint>-....npz               the encoded training and test grids
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import vqvae
from vqvae.data import load_uint8, photo_suite, spread
from vqvae.files import atomic_write
from vqvae.grid_prior import GridPrior, GridPriorConfig, encoding_fingerprint, stage_fingerprint

from . import loop, options
from .options import TrainError, option
from .runs import start_or_resume


@dataclass
class GridPriorTrainConfig:
    """Every option of a grid prior's training run; each a ``--flag``."""

    vqvae: str = option("cifar10", "pretrained name or folder of the VQ-VAE")
    dataset: str = option("cifar10", "training images", choices=("cifar10", "folder", "photos"))
    data_dir: str = option("data", "dataset root, e.g. ../shared/data", resume=True)
    image_size: int = option(
        0,
        "folder and photos datasets: the size images are resized (folder) or cropped "
        "(photos) to; 0 = the VQ-VAE's image size. Photos cropped at 128 give 32 x 32 grids "
        "of photo codes as they are, with no upscaling (--scales 1)",
    )
    out: str = option("runs/grid-prior", "run folder", resume=True)
    scales: str = option("1,2", "image scales the training grids are taken at (comma list)")
    per_scale: int = option(10_000, "training images per scale above 1 (scale 1: all)")
    init_from: str = option(
        "",
        "start from a trained grid prior (a folder or shipped name holding grid_prior.*) of "
        "the same network and codebooks: fine-tune it on this VQ-VAE's codes",
    )
    # the network
    embed_dim: int = option(16, "code embedding width, per stage")
    width: int = option(48, "network width (channels)")
    layers: int = option(3, "3x3 convolutions after the input one")
    # optimisation
    steps: int = option(8_000, "training steps", resume=True)
    batch_size: int = option(64, "grids per step")
    lr: float = option(2e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(200, "linear learning-rate warm-up steps")
    min_lr_ratio: float = option(0.05, "the cosine decay ends at lr times this")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "clip the gradient norm to this; 0 = off")
    seed: int = option(0, "seed of the weights and the data order")
    device: str = option("auto", "auto, cpu, cuda, ...", resume=True)
    log_every: int = option(50, "steps between log lines", resume=True)
    eval_every: int = option(1_000, "steps between evaluations", resume=True)
    eval_images: int = option(1_000, "test grids of an evaluation", resume=True)
    ckpt_every: int = option(250, "steps between checkpoints", resume=True)

    @property
    def total_steps(self) -> int:
        return self.steps

    @property
    def sample_every(self) -> int:  # a grid prior draws no samples during training
        return self.steps + 1

    @property
    def scale_list(self) -> list[int]:
        try:
            scales = [int(s) for s in self.scales.split(",") if s.strip()]
        except ValueError:
            scales = []
        if not scales or any(s < 1 or s > 8 for s in scales):
            raise TrainError(f"--scales must be integers in [1, 8], got {self.scales!r}")
        return scales


# ----------------------------------------------------------------------------- the codes
@torch.no_grad()
def encode_images(model, images_u8: torch.Tensor, scale: int, batch: int = 100) -> np.ndarray:
    """int16 (N, S, h, w) codes of every stage of uint8 images upscaled ``scale`` times."""
    out = []
    stages = model.config.num_stages
    for i in range(0, len(images_u8), batch):
        x = images_u8[i : i + batch].float() / 255.0
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="bicubic", antialias=True).clamp(0, 1)
        out.append(model.encode_image(x, stages=stages).to(torch.int16).numpy())
    return np.concatenate(out)


def encoded(cfg: GridPriorTrainConfig, model, fingerprint: str) -> dict:
    """{"train_<scale>": codes, "test": codes} as int64 tensors, encoded once and cached in
    the run folder."""
    scales = "-".join(map(str, cfg.scale_list))
    size = f"-s{cfg.image_size}" if cfg.image_size else ""
    path = Path(cfg.out) / (
        f"codes-{fingerprint}{size}-x{scales}-n{cfg.per_scale}-t{cfg.eval_images}.npz"
    )
    if not path.is_file():
        c = model.config
        kw = dict(image_size=cfg.image_size or c.image_size, channels=c.in_channels)
        train_u8, _ = load_uint8(cfg.dataset, cfg.data_dir, "train", **kw)
        test_u8, _ = load_uint8(cfg.dataset, cfg.data_dir, "test", **kw)
        arrays = {}
        for s in cfg.scale_list:
            pick = spread(len(train_u8), 0 if s == 1 else cfg.per_scale)
            print(f"encoding {len(pick)} training images at scale {s} ...", flush=True)
            arrays[f"train_{s}"] = encode_images(model, train_u8[pick], s)
        arrays["test"] = encode_images(model, test_u8[spread(len(test_u8), cfg.eval_images)], 1)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    with np.load(path) as d:
        return {k: torch.from_numpy(d[k].astype(np.int64)) for k in d.files}


def photo_codes(model) -> list[torch.Tensor]:
    """Codes (1, S, h, w) of every photo of the suite at its own size (photo_suite)."""
    out = []
    for photo in photo_suite().values():
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
        out.append(model.encode_image(x, stages=model.config.num_stages))
    return out


def bits_per_code(prior: GridPrior, grids) -> list[float]:
    """Mean bits per code of each stage over ``grids`` (a list of (B, S, h, w) tensors)."""
    total, cells = np.zeros(prior.config.num_stages), 0
    for g in grids:
        total += prior.stage_bits(g).sum(0).cpu().numpy()
        cells += g.shape[0] * g.shape[2] * g.shape[3]
    return (total / cells).tolist()


# ----------------------------------------------------------------------------- the run
class Grids(loop.Epochs):
    """Epochs over one scale's training grids."""

    def __init__(self, codes: torch.Tensor, batch_size: int, seed: int):
        super().__init__(len(codes), batch_size, seed, 0, 1, codes.device, "training grids")
        self.codes = codes

    def __call__(self, step: int) -> torch.Tensor:
        return self.codes[self.indices(step)]


@dataclass(kw_only=True)
class GridPriorRun(loop.Run):
    prog, weights = "train.grid_prior", "prior"

    prior: GridPrior
    fingerprint: str
    batches: list  # a Grids per scale, used in turn
    test: torch.Tensor
    photos: list
    calibration: torch.Tensor

    def take_step(self) -> torch.Tensor:
        grids = self.batches[self.step % len(self.batches)](self.step // len(self.batches))
        loss = self.prior.loss(grids.to(self.dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.prior.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return loss

    def log_step(self, loss: torch.Tensor) -> None:
        value = loop.finite(self, loss.detach().item())
        loop.emit(self, {"step": self.step, "loss": value, "lr": self.opt.param_groups[0]["lr"]})
        self.bar.set_postfix(bits=f"{value / math.log(2):.3f}")

    def evaluate(self, final: bool = False) -> dict:
        self.prior.eval()
        with torch.no_grad():
            test = bits_per_code(self.prior, self.test.split(250))
            photos = bits_per_code(self.prior, self.photos)
        self.prior.train()
        ev = {"test_bits_per_code": test, "photo_bits_per_code": photos,
              "uniform_bits_per_code": math.log2(self.prior.config.codebook_size)}  # fmt: skip
        loop.emit_eval(self, ev, final)

        def show(bits):
            return " ".join(f"{b:.3f}" for b in bits)

        tqdm.write(
            f"step {self.step}: bits per code by stage, test {show(test)}, photos {show(photos)}"
        )
        return ev

    def save_samples(self) -> None:
        pass

    def checkpoint(self) -> dict:
        return {"fingerprint": self.fingerprint}

    def report(self, summary: dict) -> str:
        ev = summary["final_eval"]
        return (
            f"done: {self.step} steps; bits per code by stage: test {ev['test_bits_per_code']}, "
            f"photos {ev['photo_bits_per_code']}; frozen prior in {self.out}"
        )


def init_prior(prior: GridPrior, source: str) -> None:
    """Load the float network of the trained grid prior ``source`` into ``prior``: its config
    must equal ``prior``'s but for the VQ-VAE's name (the same codebooks, so the same
    fingerprint; the same network). The integer network is computed again at the end."""
    try:
        src = GridPrior.from_pretrained(source)
    except (ValueError, OSError) as e:
        raise TrainError(f"--init-from {source}: {e}") from e
    mine, theirs = prior.config.to_dict(), src.config.to_dict()
    differ = sorted(k for k in mine if k != "vqvae_name" and mine[k] != theirs[k])
    if differ:
        what = ", ".join(f"{k} {theirs[k]} vs {mine[k]}" for k in differ)
        raise TrainError(f"--init-from {source}: another prior or codebook ({what})")
    floats = {k: v for k, v in src.state_dict().items() if k in dict(prior.named_parameters())}
    prior.load_state_dict(floats, strict=False)


def run(cfg: GridPriorTrainConfig, resume: bool = False) -> dict:
    if cfg.image_size and cfg.dataset == "cifar10":
        raise TrainError("--image-size is for folder and photos datasets (CIFAR-10 is 32 x 32)")
    if cfg.image_size < 0:
        raise TrainError(f"--image-size must be >= 0, got {cfg.image_size}")
    dev = loop.resolve_device(cfg.device, 0)
    ckpt, finished = start_or_resume(Path(cfg.out), resume, cfg.steps, announce=True)
    if finished is not None:
        return finished
    try:
        model = vqvae.load_pretrained(cfg.vqvae).eval()
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(f"cannot load the VQ-VAE: {e}") from e
    fingerprint = stage_fingerprint(model)
    if ckpt is not None and ckpt["fingerprint"] != fingerprint:
        raise TrainError(f"the VQ-VAE {cfg.vqvae!r} changed since this run started")
    data = encoded(cfg, model, encoding_fingerprint(model))
    torch.manual_seed(cfg.seed)
    pcfg = GridPriorConfig.for_model(
        model, embed_dim=cfg.embed_dim, channels=cfg.width, layers=cfg.layers
    )
    prior = GridPrior(pcfg)
    if cfg.init_from and ckpt is None:
        init_prior(prior, cfg.init_from)
    prior = prior.to(dev)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scales = cfg.scale_list
    state = GridPriorRun(
        cfg=cfg, opt=opt, dev=dev, rank=0, world=1, prior=prior, fingerprint=fingerprint,
        batches=[Grids(data[f"train_{s}"], cfg.batch_size, cfg.seed + s) for s in scales],
        test=data["test"], photos=photo_codes(model), calibration=data[f"train_{scales[-1]}"][:256],
    )  # fmt: skip
    if ckpt is not None:
        loop.restore(state, ckpt)
    loop.open_logs(state, {"fingerprint": fingerprint})
    prior.train()
    loop.train_loop(state, desc="grid prior")
    summary = loop.finish(state, cfg.dataset, parameters=sum(p.numel() for p in prior.parameters()))
    if not summary["interrupted"]:  # the integer network, what the codec runs
        prior.eval()
        prior.freeze(state.calibration)
        prior.save_pretrained(state.out)
    return summary


def make_parser() -> argparse.ArgumentParser:
    return options.make_parser(GridPriorTrainConfig, "python -m train.grid_prior", __doc__, {})


def main(argv=None) -> None:
    args = make_parser().parse_args(argv)
    given = options.given(GridPriorTrainConfig, args)
    out = args.out or "runs/grid-prior"

    def train():
        if args.resume:
            values = options.resumed(GridPriorTrainConfig, Path(out), given)
        else:
            values = given
        return run(GridPriorTrainConfig(**values), resume=args.resume)

    loop.cli("train.grid_prior", out, train)


if __name__ == "__main__":
    main()
