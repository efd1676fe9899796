"""python -m train: (1) pre-train encoder+decoder without quantization, (2) k-means init of the
codebook on encoder outputs, (3) VQ training with EMA codebook and dead-code restarts.

Reads top to bottom: options (train.config) -> data -> one training step -> the run's state
-> the run (its loop is train.loop's, shared with train.prior). Every phase can be switched
off: the plain VQ-VAE of the paper is ``--recipe baseline`` (codebook loss, beta=1, random
init, no pre-training). Runs on CUDA (bf16 autocast, data resident on the GPU, channels_last,
fused AdamW, optional torch.compile with CUDA graphs), on CPU, and on several GPUs with
``torchrun --nproc_per_node=N -m train ...`` (DDP; only rank 0 writes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import vqvae
from vqvae.data import load_uint8, spread
from vqvae.metrics import psnr

from . import loop
from .config import (  # noqa: F401  (train.train's public names: the CLI and its options)
    MODEL_OPTIONS,
    RECIPES,
    TRAIN_PRESETS,
    TrainConfig,
    build_config,
    check_config,
    command_args,
    freeze_parts,
    make_parser,
    model_config,
    parse_args,
    resume_config,
)
from .evaluate import evaluate
from .options import TrainError, flag  # noqa: F401
from .runs import start_or_resume


# ----------------------------------------------------------------------------- data
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

    return loop.first_on_rank_0(load, rank, world)


class Batches(loop.Epochs):
    """Real epochs over shuffled images (loop.Epochs). Data stays uint8 on its device and is
    scaled to [0, 1] per batch: uint8 / 255 is in the model's input range by construction,
    so no step checks it."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int, rank: int, world: int,
                 channels_last: bool):  # fmt: skip
        super().__init__(len(images), batch_size, seed, rank, world, images.device)
        self.images, self.channels_last = images, channels_last

    def __call__(self, step: int) -> torch.Tensor:
        x = self.images[self.indices(step)].float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


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


@dataclass
class DistilledOutput(vqvae.VQVAEOutput):
    """A training forward's output under ``--teacher``: ``loss`` includes the distillation
    term, ``distill_loss`` is its MSE before weighting."""

    distill_loss: torch.Tensor | None = None


def distilled(forward, teacher: vqvae.VQVAE, weight: float):
    """``forward`` (the training forward) with ``weight`` x the MSE between the student's
    encoder outputs and the teacher's (computed without gradients) added to the loss: the
    encoder learns the teacher's latents, so the frozen codebooks it shares give it the
    teacher's codes."""

    def forward_distilled(net, x: torch.Tensor, quantize: bool, amp: bool) -> DistilledOutput:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            target = teacher.encoder(x * 2.0 - 1.0)
        o = forward(net, x, quantize, amp)
        d = F.mse_loss(o.latents.float(), target.float())
        fields = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
        return DistilledOutput(**{**fields, "loss": o.loss + weight * d, "distill_loss": d})

    return forward_distilled


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
@dataclass(kw_only=True)
class RunState(loop.Run):
    """The loop's state (train.loop.Run) with the VQ-VAE, its data and the phase it is in."""

    prog, weights = "train", "model"

    model: vqvae.VQVAE
    train_u8: torch.Tensor
    test_u8: torch.Tensor
    amp: bool  # bf16 autocast
    batches: Batches | None = None
    forward: object = forward_loss  # the training forward (compiled under --compile)
    kmeans_done: bool = False
    kept_stages: int = 0  # quantizer stages loaded from --init-from (k-means leaves them)
    teacher: vqvae.VQVAE | None = None  # --teacher: the model distilled from
    vq: bool | None = None  # the phase the loop is in (None: before the first step)
    net: torch.nn.Module | None = None  # what the step calls: the model, or its DDP wrapper

    def take_step(self):
        cfg = self.cfg
        vq = self.step >= cfg.pretrain_steps
        if vq != self.vq:  # a new phase: k-means on the pre-trained encoder first
            if vq and cfg.kmeans and not self.kmeans_done:
                kmeans_init(self)
            self.net, self.vq = phase_model(self, vq), vq
            self.bar.set_description("vq" if vq else "pretrain")
        x = self.batches(self.step)
        o = train_step(self.net, self.opt, x, quantize=vq, amp=self.amp,
                       grad_clip=cfg.grad_clip, forward=self.forward)  # fmt: skip
        return o, x

    def log_step(self, out) -> None:
        """Read the step's statistics back from the device (the only host sync of a log step)."""
        o, x = out
        record = {
            "step": self.step,
            "phase": "vq" if self.vq else "pretrain",
            "loss": loop.finite(self, o.loss.detach().item()),
            "recon_loss": o.recon_loss.detach().item(),
            "commitment_loss": o.commitment_loss.detach().item(),
            "codebook_loss": o.codebook_loss.detach().item(),
            **(
                {"distill_loss": o.distill_loss.detach().item()}
                if isinstance(o, DistilledOutput)
                else {}
            ),  # fmt: skip
            "perplexity": o.perplexity.item(),
            "codes_used": int(o.codes_used),
            "psnr": psnr(o.reconstruction.detach().float(), x.float()).mean().item(),
            "lr": self.opt.param_groups[0]["lr"],
            "images_per_s": loop.per_second(self, self.cfg.batch_size),
        }
        loop.emit(self, record)
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            psnr=f"{record['psnr']:.2f}",
            ppl=f"{record['perplexity']:.0f}",
            used=record["codes_used"],
        )

    def evaluate(self, final: bool = False) -> dict:
        """Test metrics (--eval-images evenly spread over the split, or every test image when
        ``final``)."""
        # a periodic eval runs in the phase of the step just taken
        vq = self.step >= self.cfg.pretrain_steps if final else self.vq
        test = self.test_u8
        images = test if final else test[spread(len(test), self.cfg.eval_images)]
        ev = evaluate(self.model, images, device=self.dev, progress=final, quantize=vq)
        if self.teacher is not None:
            ev["teacher_codes_agree"] = codes_agree(self.model, self.teacher, images, self.dev)
        loop.emit_eval(self, ev, final, phase="vq" if vq else "pretrain")
        self.model.train()
        if not final:
            stages = ev.get("psnr_stages")
            by_stage = f" (stages 1..: {' / '.join(f'{v:.2f}' for v in stages)})" if stages else ""
            agree = ev.get("teacher_codes_agree")
            agree = f", codes as the teacher's {' / '.join(f'{a:.3f}' for a in agree)}" if (
                agree) else ""  # fmt: skip
            tqdm.write(
                f"step {self.step}: test PSNR {ev['psnr']:.2f} dB{by_stage}, "
                f"SSIM {ev['ssim']:.4f}, "
                f"codes used {ev['codes_used']}/{self.model.config.codebook_size}{agree}"
            )
        return ev

    def save_samples(self) -> None:
        """samples/step_NNNNNN.png: 16 test images (top) and their reconstructions (bottom)."""
        from torchvision.utils import save_image

        model = self.model
        model.eval()
        with torch.no_grad():
            x = self.test_u8[:16].to(self.dev).float() / 255
            rec = model(x, quantize=self.step >= self.cfg.pretrain_steps).reconstruction.float()
        model.train()
        save_image(torch.cat([x, rec]), loop.sample_path(self), nrow=16)

    def checkpoint(self) -> dict:
        return {"kmeans_done": self.kmeans_done, "kept_stages": self.kept_stages}

    def load(self, ckpt: dict) -> None:
        self.kmeans_done = bool(ckpt["kmeans_done"])
        # (checkpoints from before kept_stages: an --init-from run kept the first stage)
        self.kept_stages = int(ckpt.get("kept_stages", 1 if self.cfg.init_from else 0))

    def report(self, summary: dict) -> str:
        ev = summary["final_eval"]
        return (
            f"done: {self.step} steps in {summary['elapsed_s']:.0f} s; test PSNR "
            f"{ev['psnr']:.2f} dB, codes used {ev['codes_used']}/"
            f"{self.model.config.codebook_size}; weights in {self.out}"
        )


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
    samples = flat[keep.to(flat.device)]
    # a model started from trained weights keeps the stages it has; stage s >= 2 is fit to
    # what the stages before it leave of the samples
    stages = [model.quantizer, *model.residual]
    for s in range(state.kept_stages, len(stages)):
        rest = samples
        if s:
            with torch.no_grad():
                rest = samples - model.quantize_stages(samples[:, :, None, None], s)[0][:, :, 0, 0]
        inertia = float(stages[s].init_kmeans(rest, seed=cfg.seed + s))
        if state.main:
            print(
                f"k-means init of stage {s + 1} on {len(keep) * state.world} encoder outputs: "
                f"inertia/sample {inertia:.4f}",
                flush=True,
            )
        loop.emit(state, {"step": state.step, "event": "kmeans_init", "stage": s + 1,
                          "inertia_per_sample": inertia})  # fmt: skip
    state.kmeans_done = True


# fields that may differ from the --init-from model's: the quantizer's training recipe, the
# name; and the stages (--init-from) or the network's widths (--teacher)
_RECIPE_FIELDS = {"name", "beta", "use_ema", "ema_decay", "ema_eps", "dead_code_threshold"}
_INIT_FREE = _RECIPE_FIELDS | {"num_stages"}
_TEACHER_FREE = _RECIPE_FIELDS | {"hidden_channels", "res_layers", "res_channels"}


def _source(model: vqvae.VQVAE, option: str, source: str, free: set[str]) -> vqvae.VQVAE:
    """The trained VQ-VAE ``source`` (a folder or shipped name) of ``option``, whose config
    equals ``model``'s but for the fields ``free``."""
    try:
        src = vqvae.VQVAE.from_pretrained(source)
    except (ValueError, OSError) as e:
        raise TrainError(f"{option} {source}: {e}") from e
    mine, theirs = model.config.to_dict(), src.config.to_dict()
    differ = sorted(k for k in mine if k not in free and mine[k] != theirs[k])
    if differ:
        what = ", ".join(f"{k} {theirs[k]} vs {mine[k]}" for k in differ)
        raise TrainError(f"{option} {source}: another network ({what}; set them to match)")
    return src


def init_weights(model: vqvae.VQVAE, source: str) -> int:
    """Load the weights of the trained VQ-VAE ``source`` (a folder or shipped name) into
    ``model``: the same network, fewer or as many quantizer stages (new stages are
    initialised by k-means on what the kept ones leave). Returns the stages loaded."""
    src = _source(model, "--init-from", source, _INIT_FREE)
    if src.config.num_stages > model.config.num_stages:
        raise TrainError(
            f"--init-from {source}: another network (num_stages "
            f"{src.config.num_stages} vs {model.config.num_stages})"
        )
    model.load_state_dict(_float_state(src), strict=False)
    return src.config.num_stages


def _float_state(module: torch.nn.Module) -> dict:
    """``module``'s state with its floating tensors as float32 (shipped weights are float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def load_teacher(model: vqvae.VQVAE, source: str, copy: bool) -> vqvae.VQVAE:
    """The trained VQ-VAE ``source`` that ``model`` learns from (``--teacher``): the same
    grid and codebooks (K, D, downsample, stages, channels), any widths. With ``copy`` its
    quantizer stages are loaded into ``model``; either way ``model``'s stages are frozen
    (``Quantizer.frozen``). Returns the teacher in eval mode, without gradients."""
    src = _source(model, "--teacher", source, _TEACHER_FREE)
    for mine, theirs in zip([model.quantizer, *model.residual],
                            [src.quantizer, *src.residual], strict=True):  # fmt: skip
        if copy:
            mine.load_state_dict(_float_state(theirs))
        mine.frozen = True
    return src.float().eval().requires_grad_(False)


@torch.no_grad()
def codes_agree(student: vqvae.VQVAE, teacher: vqvae.VQVAE, images_u8: torch.Tensor, dev,
                batch: int = 500) -> list[float]:  # fmt: skip
    """For each quantizer stage, the share of code cells of ``images_u8`` (N, C, H, W)
    uint8 where the student's code equals the teacher's."""
    student.eval()
    S, same, cells = student.config.num_stages, 0, 0
    for i in range(0, len(images_u8), batch):
        x = images_u8[i : i + batch].to(dev).float() / 255
        a, b = (m.encode_image(x, stages=S) for m in (student, teacher))
        same = same + (a == b).sum((0, 2, 3)).double()
        cells += a.shape[0] * a.shape[2] * a.shape[3]
    return [round(float(v) / cells, 5) for v in same]


def freeze(model: vqvae.VQVAE, parts: list[str]) -> None:
    """Keep ``parts`` of ``model`` as loaded (``--freeze``): the encoder or decoder without
    gradients, the quantizer's stages ``frozen`` (no EMA, no restarts, no gradient)."""
    for part in parts:
        if part == "quantizer":
            for stage in (model.quantizer, *model.residual):
                stage.frozen = True
        else:
            getattr(model, part).requires_grad_(False)


def phase_model(state: RunState, vq: bool):
    """The module a phase trains: the codebook is a trained parameter only in the VQ phase
    without EMA; under DDP the wrapper is rebuilt because that set of parameters changed."""
    for stage in (state.model.quantizer, *state.model.residual):
        stage.embedding.requires_grad_(vq and not state.model.config.use_ema and not stage.frozen)
    return loop.ddp(state.model, state.dev) if state.world > 1 else state.model


# ----------------------------------------------------------------------------- the run
def run(cfg: TrainConfig, resume: bool = False, build_model=None) -> dict:
    """Train as ``cfg`` says; returns the summary. ``build_model(model_config)`` replaces
    ``vqvae.VQVAE`` (the benchmarks use it to swap in another quantizer)."""
    rank, world, local_rank = loop.setup_distributed()
    dev = loop.resolve_device(cfg.device, local_rank)
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
    kept = init_weights(model, cfg.init_from) if cfg.init_from and ckpt is None else 0
    teacher = None
    if cfg.teacher:  # (a resumed run's codebooks come from its checkpoint)
        teacher = load_teacher(model, cfg.teacher, copy=ckpt is None).to(dev)
        kept = model.config.num_stages
    freeze(model, freeze_parts(cfg))
    if model.config.num_stages > 1:
        model.first_stage_share = cfg.first_stage_share
    elif cfg.first_stage_share is not None:
        raise TrainError("--first-stage-share is for residual models (--num-stages 2 or more)")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        teacher = teacher and teacher.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg, dev)
    state = RunState(
        cfg=cfg, opt=opt, dev=dev, rank=rank, world=world, model=model, train_u8=train_u8,
        test_u8=test_u8, amp=cfg.amp and dev.type == "cuda", kept_stages=kept,
        teacher=teacher, kmeans_done=teacher is not None,
    )  # fmt: skip
    if ckpt is not None:
        loop.restore(state, ckpt)
    state.forward = compiled_forward(dev) if cfg.compile else forward_loss
    if teacher is not None:
        state.forward = distilled(state.forward, teacher, cfg.distill_weight)
    state.batches = Batches(train_u8, cfg.batch_size, cfg.seed, rank, world, cfg.channels_last)
    if state.main:
        loop.open_logs(state, {"data_source": info.source, "world_size": world},
                       tensorboard=True)  # fmt: skip

    model.train()
    loop.train_loop(state, desc="pretrain" if state.step < cfg.pretrain_steps else "vq")
    return loop.finish(state, info.source)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out or f"runs/{args.preset or 'mnist'}"
    loop.cli("train", out, lambda: run(resume_config(args) if args.resume else build_config(args),
                                       resume=args.resume))  # fmt: skip
