"""The options of ``python -m train``: the TrainConfig dataclass (each field a ``--flag``),
the training presets, the recipes of the benchmarks' ablation ladder, and how flags, a preset
and a resumed run's saved options make one config.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import vqvae
from vqvae.data import DATASETS

from . import options
from .options import TrainError, option

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
    # photos of any size in root/train/ and root/test/, cut into crops at several scales
    # (vqvae.crops; python -m train.photo_set builds such a folder); mostly with --init-from
    "photos": dict(
        dataset="photos",
        model_preset="cifar10",
        steps=6_000,
        pretrain_steps=0,
        batch_size=128,
        lr=1e-4,
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
    "num_stages",
)


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
    num_stages: int | None = option(
        None, "residual quantizer stages (each a K-code book; the first n decode alone)"
    )
    first_stage_share: float | None = option(
        None,
        "residual models: the share of training images decoded from stage 1 alone, the rest "
        "from 2..S stages (default: uniform over 1..S)",
    )
    init_from: str = option(
        "",
        "start from a trained VQ-VAE (folder or shipped name) of the same network; "
        "its stages are kept, new ones k-means initialised (needs --pretrain-steps 0)",
    )
    teacher: str = option(
        "",
        "distil from a trained VQ-VAE (folder or shipped name) of the same grid and codebooks "
        "(widths may differ): its quantizer stages are copied and kept frozen, and this "
        "encoder learns to match its encoder's outputs, so its codes and priors carry over "
        "(needs --pretrain-steps 0)",
    )
    distill_weight: float = option(
        1.0, "--teacher: weight of the MSE between this encoder's outputs and the teacher's"
    )
    freeze: str = option(
        "",
        "parts kept as loaded from --init-from or --teacher: a comma list of encoder, "
        "quantizer, decoder (e.g. 'encoder,quantizer' fits the decoder alone to new data: "
        "the codes, and so the priors, stay the source's)",
    )
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


# Flags renamed to the config's field names; the old spelling gets a pointer to the new one.
RENAMED_FLAGS = {
    "--ema": "--use-ema",
    "--no-ema": "--no-use-ema",
    "--channels": "--in-channels",
}


def make_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per TrainConfig field (bools as --x / --no-x), plus --resume."""
    from . import train  # its docstring is the CLI's description

    from_preset = {k for d in (*TRAIN_PRESETS.values(), *RECIPES.values()) for k in d}
    defaults = {
        **{k: " (default: the model preset's)" for k in MODEL_OPTIONS},
        **{k: " (default: set by --preset / --recipe)" for k in from_preset},
        "preset": "",
        "out": "",
    }
    return options.make_parser(TrainConfig, "python -m train", train.__doc__, defaults)


def parse_args(argv=None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:
        old = arg.split("=", 1)[0]
        if old in RENAMED_FLAGS:
            make_parser().error(f"{old} is now {RENAMED_FLAGS[old]}")
    return make_parser().parse_args(argv)


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
    values.update(options.given(TrainConfig, args))
    return check_config(TrainConfig(**values))


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The saved options of the run in --out, with the flags a resume may change applied
    (any other flag that differs from the run's is refused)."""
    out = Path(args.out or f"runs/{args.preset or 'mnist'}")
    return check_config(
        TrainConfig(**options.resumed(TrainConfig, out, options.given(TrainConfig, args)))
    )


def check_config(cfg: TrainConfig) -> TrainConfig:
    if cfg.steps < 0 or cfg.pretrain_steps < 0 or cfg.batch_size < 1:
        raise TrainError("--steps and --pretrain-steps must be >= 0 and --batch-size >= 1")
    options.at_least_one(cfg, ("log_every", "eval_every", "ckpt_every", "sample_every"))
    share = cfg.first_stage_share
    if share is not None and not 0.0 < share < 1.0:
        raise TrainError(f"--first-stage-share must be between 0 and 1, not {share}")
    if cfg.init_from and cfg.pretrain_steps:
        raise TrainError("--init-from starts from trained weights: use --pretrain-steps 0")
    if cfg.teacher and cfg.pretrain_steps:
        raise TrainError("--teacher gives the codebooks from the start: use --pretrain-steps 0")
    if cfg.teacher and cfg.init_from:
        raise TrainError("--teacher and --init-from both set the codebooks: choose one")
    parts = freeze_parts(cfg)
    if parts and not (cfg.init_from or cfg.teacher):
        raise TrainError("--freeze keeps loaded weights: use it with --init-from or --teacher")
    if set(parts) == set(FREEZABLE):
        raise TrainError("--freeze: every part frozen leaves nothing to train")
    if cfg.distill_weight < 0:
        raise TrainError(f"--distill-weight must be >= 0, not {cfg.distill_weight}")
    return cfg


FREEZABLE = ("encoder", "quantizer", "decoder")


def freeze_parts(cfg: TrainConfig) -> list[str]:
    """The parts ``--freeze`` names, checked."""
    parts = [p.strip() for p in cfg.freeze.split(",") if p.strip()]
    wrong = [p for p in parts if p not in FREEZABLE]
    if wrong:
        raise TrainError(
            f"--freeze: unknown part {', '.join(map(repr, wrong))}; choose from "
            f"{', '.join(FREEZABLE)}"
        )
    return parts


def command_args(cfg: TrainConfig) -> list[str]:
    """Flags that rebuild ``cfg`` with ``python -m train``: the preset, the recipe, the budget,
    and every other option whose value differs from what that preset and recipe give."""
    base = build_config(parse_args(["--preset", cfg.preset, "--recipe", cfg.recipe]))
    always = ("preset", "recipe", "steps", "pretrain_steps", "batch_size", "lr", "seed")
    return options.command_flags(cfg, base, always)


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
