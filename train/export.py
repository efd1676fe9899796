"""python -m train.export RUN --name NAME

Writes pretrained/NAME/: model.safetensors + config.json, metrics.json (test split, from
train.evaluate), codebook.json (code usage on the training split, 2-D and 3-D UMAP
coordinates of the codebook: computed here once so the app never runs UMAP at start-up),
code_patches.npz (training crops of what each code stands for, shown by the app's code
inspector) and a model card README.md; plus example test images in assets/examples/NAME/ and a
reconstruction grid in assets/reconstructions/NAME.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import vqvae
from vqvae.checkpoint import WEIGHTS_NAME
from vqvae.data import DatasetNotFoundError
from vqvae.files import write_json_atomic
from vqvae.viz import CODE_PATCHES, CODEBOOK_INFO, code_patches, codebook_info, save_code_patches

from .config import TrainConfig, build_config, command_args, parse_args
from .evaluate import format_table, metrics_record, split_images, usage_counts
from .options import fields
from .runs import RunError, is_run_dir, read_train_config

ROOT = Path(__file__).resolve().parent.parent

CARD = """# {title}

A VQ-VAE trained with this repository's `train/` scripts. Load it with

```python
import vqvae

model = vqvae.load_pretrained("{name}")
codes = model.encode(images)  # (B, {h}, {h}) int64 in [0, {K})
recon = model.decode(codes)  # (B, {C}, {S}, {S}) in [0, 1]
```

| | |
|---|---|
| data | {data_source}: trained on the train split, measured on test ({num_images} images) |
| model | {S}x{S}x{C} -> {h}x{h} codes, K={K}, D={D}; {bits:.0f} bits per image{stages} |
| network | hidden {hidden}, {res} residual layers of {res_ch} channels |
| weights | {dtype} safetensors, {weights_mb:.1f} MB ({params:.2f} M parameters) |
| recipe | {recipe_text} |
| steps | {pretrain} pre-training + {steps} VQ steps, batch {batch}, lr {lr} (AdamW, cosine) |
| time | {time} |
| hardware | {hardware} (torch {torch}) |

## Metrics (test split, pixels in [0, 1])

| metric | value |
|---|---|
| PSNR (mean of per-image PSNR) | **{psnr:.2f} dB** |
{stage_psnr}| SSIM | {ssim:.4f} |
| MSE | {mse:.6f} |
| codes used (distinct over the split / K) | {codes_used} / {K} ({frac:.1f} %) |
| perplexity over the split | {perplexity:.1f} |

Reproduce: `python -m train.evaluate {name} --dataset {dataset} --data-dir DATA_DIR`.

Training command: `{command}`
{note}"""


def _stage_text(c: vqvae.VQVAEConfig, metrics: dict) -> dict:
    """The card's words for a residual quantizer: its stages, and the PSNR of each prefix
    of them (empty for a one-stage model)."""
    if c.num_stages == 1:
        return {"stages": "", "stage_psnr": ""}
    psnr = " / ".join(f"{v:.2f}" for v in metrics.get("psnr_stages", []))
    return {
        "stages": f" a stage; {c.num_stages} residual stages, the first n of which decode "
        f"alone ({c.num_stages} rates)",
        "stage_psnr": f"| PSNR from the first 1, 2, .. {c.num_stages} stages | {psnr} dB |\n",
    }


def _recipe_text(tc: dict) -> str:
    """The card's recipe row: the quantizer recipe by name and what it does, or how the
    model was distilled from its teacher."""
    if tc.get("teacher"):
        return (
            f"distilled from `{tc['teacher']}`: its codebooks copied and kept frozen, the "
            f"encoder trained to match its encoder's outputs (MSE, weight "
            f"{tc.get('distill_weight', 1.0)}) beside the reconstruction and commitment "
            f"(beta={tc['beta']}) losses, so its codes and priors carry over"
        )
    parts = [
        "EMA codebook (decay 0.99)" if tc["use_ema"] else "codebook loss",
        f"beta={tc['beta']}",
        "k-means init" if tc["kmeans"] else "random codebook init",
        f"dead-code restarts after {tc['dead_code_threshold']} unused steps"
        if tc["dead_code_threshold"]
        else "no restarts",
    ]
    return f"`{tc['recipe']}` recipe: " + ", ".join(parts)


def training_command(tc: dict) -> str:
    """The command that rebuilds the run of ``tc`` (a read_train_config dict) exactly: every
    option that differs from its preset and recipe, with the data folder as DATA_DIR."""
    names = fields(TrainConfig)
    cfg = TrainConfig(**{k: v for k, v in tc.items() if k in names})
    args = command_args(cfg)
    if "--data-dir" in args:
        i = args.index("--data-dir")
        del args[i : i + 2]
    args[4:4] = ["--data-dir", "DATA_DIR"]  # after --preset P --recipe R
    world = tc.get("world_size", 1)
    launcher = f"torchrun --nproc_per_node={world} -m train" if world > 1 else "python -m train"
    return " ".join([launcher, *args])


def command_config(command: str, tc: dict) -> TrainConfig:
    """The config ``python -m train`` builds from a model card's ``command`` (as
    :func:`training_command` writes it), with the data folder and run folder of ``tc``:
    what a reader of the card gets."""
    argv = shlex.split(command)
    if argv[:3] != ["python", "-m", "train"] and not argv[0].startswith("torchrun"):
        raise ValueError(f"not a training command: {command!r}")
    argv = argv[argv.index("train") + 1 :]
    argv = [tc["data_dir"] if a == "DATA_DIR" else a for a in argv]
    return build_config(parse_args([*argv, "--out", tc["out"]]))


def _swap_dirs(a: Path, b: Path) -> bool:
    """Exchange two folders in one atomic step (Linux renameat2, macOS renamex_np); False
    where the system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        src, dst = os.fsencode(a), os.fsencode(b)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            ok = libc.renameat2(at_fdcwd, src, at_fdcwd, dst, rename_exchange) == 0
        elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            ok = libc.renamex_np(src, dst, 2) == 0  # RENAME_SWAP
        else:
            return False
    except OSError:
        return False
    return ok


def replace_dir(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``. Readers see the old folder or the new one at every
    moment: an atomic exchange where the system has one; otherwise two renames, with
    :func:`clean_stale` putting the old folder back if a kill falls between them."""
    if not final.exists():
        os.rename(new, final)
        return
    if _swap_dirs(new, final):
        shutil.rmtree(new)  # now the old model
        return
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old)


def clean_stale(out_root: Path, name: str) -> None:
    """Undo what an export of ``name`` killed half-way left: restore a model moved aside,
    delete temporary folders."""
    final, old = out_root / name, out_root / f".{name}.old"
    if old.is_dir() and not final.exists():
        os.rename(old, final)
    for stale in [old, *out_root.glob(f".{name}.*.tmp"), out_root / f".{name}.tmp"]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def write_examples(name: str, images_u8: torch.Tensor, model, assets: Path, count: int = 8) -> None:
    """Save ``count`` test images (spread over the split) and a targets-vs-reconstructions grid."""
    from torchvision.utils import save_image

    pick = torch.linspace(0, len(images_u8) - 1, count).long()
    x = images_u8[pick].float() / 255.0
    ex = assets / "examples" / name
    if ex.exists():
        shutil.rmtree(ex)
    ex.mkdir(parents=True)
    for i, img in zip(pick.tolist(), x, strict=False):
        save_image(img, ex / f"test_{i:05d}.png")
    with torch.no_grad():
        rec = model.decode(model.encode(x.to(model.device))).cpu()
    grid = torch.nn.functional.interpolate(torch.cat([x, rec]), scale_factor=4, mode="nearest")
    (assets / "reconstructions").mkdir(parents=True, exist_ok=True)
    save_image(
        grid, assets / "reconstructions" / f"{name}.png", nrow=count, padding=4, pad_value=1.0
    )


def export(
    run: Path,
    name: str,
    data_dir: str | None = None,
    out_root: Path = ROOT / "pretrained",
    assets: Path = ROOT / "assets",
    device: str = "cpu",
    progress: bool = True,
    note: str = "",
    dtype: str = "float32",
    patches: bool = True,
) -> Path:
    """Write pretrained/NAME from a run. The metrics are measured on the weights as written
    (``dtype="float16"`` halves the file), so ``train.evaluate`` on the folder reproduces them.
    ``patches``: also write code_patches.npz (vqvae.viz.code_patches on the training split)."""
    run = Path(run)
    if not is_run_dir(run):
        raise RunError(f"{run} is not a training run folder (no train_config.json)")
    tc = read_train_config(run)
    summary = (
        json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    )
    data_dir = data_dir or tc["data_dir"]
    model = vqvae.load_pretrained(run, device=device)
    c = model.config

    # build in a temporary folder, then swap it in: a failure never leaves half a model
    out_root.mkdir(parents=True, exist_ok=True)
    clean_stale(out_root, name)
    tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=f".{name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the shipped folder is an ordinary one
    try:
        model.save_pretrained(tmp, dtype=dtype)
        model = vqvae.load_pretrained(tmp, device=device)  # measure what is shipped
        train_u8, _ = split_images(model, tc["dataset"], data_dir, "train")
        test_u8, data_info = split_images(model, tc["dataset"], data_dir, "test")
        metrics = metrics_record(
            model, name, test_u8, tc["dataset"], "test", data_info.source, progress
        )
        write_json_atomic(tmp / "metrics.json", metrics)
        write_json_atomic(tmp / CODEBOOK_INFO, codebook_info(model, usage_counts(model, train_u8)))
        if patches:
            save_code_patches(tmp / CODE_PATCHES, code_patches(model, train_u8))
        weights_mb = (tmp / WEIGHTS_NAME).stat().st_size / 1e6
        secs = summary.get("elapsed_s")
        (tmp / "README.md").write_text(
            CARD.format(
                title=f"VQ-VAE `{name}`",
                name=name,
                h=c.latent_size,
                K=c.codebook_size,
                C=c.in_channels,
                S=c.image_size,
                D=c.embedding_dim,
                hidden=c.hidden_channels,
                res=c.res_layers,
                res_ch=c.res_channels,
                dtype=dtype,
                weights_mb=weights_mb,
                params=sum(p.numel() for p in model.parameters()) / 1e6,
                bits=c.bits_per_image,
                data_source=metrics["data_source"],
                num_images=metrics["num_images"],
                recipe_text=_recipe_text(tc),
                pretrain=tc["pretrain_steps"],
                steps=tc["steps"],
                batch=tc["batch_size"] * tc.get("world_size", 1),
                lr=tc["lr"],
                time=f"{secs / 60:.1f} min of training" if secs else "not recorded",
                hardware=summary.get("hardware", "not recorded"),
                torch=summary.get("torch", "?"),
                psnr=metrics["psnr"],
                ssim=metrics["ssim"],
                mse=metrics["mse"],
                codes_used=metrics["codes_used"],
                frac=100 * metrics["codes_used_fraction"],
                perplexity=metrics["perplexity"],
                dataset=tc["dataset"],
                command=training_command(tc),
                note=f"\n{note}\n" if note else "",
                **_stage_text(c, metrics),
            )
        )
        final = out_root / name
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_examples(name, test_u8, model, assets)
    print(format_table(metrics))
    print(f"wrote {final}")
    return final


def export_patches(
    model_dir: Path, dataset: str | None = None, data_dir: str | None = None, device: str = "cpu"
) -> Path:
    """Write ``model_dir/code_patches.npz`` (vqvae.viz.code_patches over the training split)
    for an exported model, without re-exporting the rest. ``dataset`` defaults to the one
    in its metrics.json."""
    model_dir = Path(model_dir)
    model = vqvae.load_pretrained(model_dir, device=device)
    if dataset is None:
        metrics = model_dir / "metrics.json"
        if not metrics.is_file():
            raise ValueError(f"{model_dir} has no metrics.json: pass --dataset")
        dataset = json.loads(metrics.read_text())["dataset"]
    if data_dir is None:
        raise ValueError("pass --data-dir: the dataset root to take the training images from")
    train_u8, _ = split_images(model, dataset, data_dir, "train")
    out = model_dir / CODE_PATCHES
    save_code_patches(out, code_patches(model, train_u8))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="training run folder (with --patches-only: a model folder)")
    p.add_argument("--name", help="folder name under pretrained/ (required unless --patches-only)")
    p.add_argument(
        "--patches-only",
        action="store_true",
        help=f"only (re)write {CODE_PATCHES} into the model folder RUN",
    )
    p.add_argument("--dataset", help="with --patches-only: default, the model's metrics.json")
    p.add_argument("--data-dir", help="dataset root (default: the run's)")
    p.add_argument("--out-root", default=str(ROOT / "pretrained"))
    p.add_argument("--assets", default=str(ROOT / "assets"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--note", default="", help="a paragraph for the model card (how it was trained)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="weights file precision; float16 halves it (loading gives float32)",
    )
    a = p.parse_args(argv)
    if a.patches_only:
        try:
            export_patches(Path(a.run), a.dataset, a.data_dir, a.device)
        except (FileNotFoundError, ValueError, DatasetNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        return
    if not a.name:
        p.error("--name is required")
    if not a.name.replace("-", "").replace("_", "").isalnum():
        print("error: --name may hold letters, digits, '-' and '_' only", file=sys.stderr)
        sys.exit(2)
    try:
        export(
            Path(a.run),
            a.name,
            a.data_dir,
            Path(a.out_root),
            Path(a.assets),
            a.device,
            note=a.note,
            dtype=a.dtype,
        )
    except (RunError, FileNotFoundError, ValueError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
