"""python -m train.evaluate MODEL --dataset NAME --data-dir DIR

MODEL is a run folder, a pretrained/ name or a folder written by save_pretrained. Prints a
table and writes JSON: per-image PSNR mean, SSIM, MSE, codes used over the whole split,
perplexity over the split, bits per image, dataset and which copy of the data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import vqvae
from vqvae.data import DATASETS, DatasetNotFoundError, load_uint8, spread
from vqvae.metrics import CodebookUsage, mse, psnr, ssim

from .runs import read_train_config


@torch.no_grad()
def evaluate(
    model,
    images_u8: torch.Tensor,
    *,
    device=None,
    batch_size: int = 500,
    progress: bool = True,
    quantize: bool = True,
) -> dict:
    """Metrics of ``model`` over uint8 images (N, C, H, W), in fp32 and eval mode.
    PSNR is the mean of per-image PSNR; codes used are distinct codes over the whole set
    (the first stage's). A residual model also gets ``psnr_stages``: the mean PSNR decoded
    from its first 1, 2, .. num_stages stages (its rates)."""
    from tqdm.auto import tqdm

    device = device or model.device
    was_training = model.training
    model.eval()
    K = model.config.codebook_size
    usage = CodebookUsage(K)
    sums = dict(psnr=0.0, ssim=0.0, mse=0.0)
    S = model.config.num_stages if quantize else 1
    stage_sums = [0.0] * (S - 1)  # the PSNR of every shorter prefix of stages
    for i in tqdm(
        range(0, len(images_u8), batch_size), disable=not progress, desc="evaluate", unit="batch"
    ):
        x = images_u8[i : i + batch_size].to(device).float() / 255.0
        out = model(x, quantize=quantize)
        rec = out.reconstruction.float()
        sums["psnr"] += float(psnr(rec, x).sum())
        sums["ssim"] += float(ssim(rec, x).sum())
        sums["mse"] += float(mse(rec, x).sum())
        if out.indices is not None:
            usage.update(out.indices)
        if S > 1:
            codes = model.encode_image(x, stages=S - 1)
            for n in range(S - 1):
                stage_sums[n] += float(psnr(model.decode_codes(codes[:, : n + 1]), x).sum())
    model.train(was_training)
    n = len(images_u8)
    h = w = model.config.latent_size
    # all S stages: the forward's reconstruction
    stages = {"psnr_stages": [v / n for v in [*stage_sums, sums["psnr"]]]} if S > 1 else {}
    return {
        "psnr": sums["psnr"] / n,
        "ssim": sums["ssim"] / n,
        "mse": sums["mse"] / n,
        "codes_used": usage.used,
        "codes_used_fraction": usage.fraction,
        "perplexity": usage.perplexity,
        "bits_per_image": vqvae.metrics.bits_per_image(h, w, K),
        "num_images": n,
        **stages,
    }


def usage_counts(
    model, images_u8: torch.Tensor, *, device=None, batch_size: int = 1000
) -> torch.Tensor:
    """Per-code counts (K,) over a set of uint8 images."""
    usage = CodebookUsage(model.config.codebook_size)
    device = device or model.device
    with torch.no_grad():
        for i in range(0, len(images_u8), batch_size):
            usage.update(model.encode(images_u8[i : i + batch_size].to(device).float() / 255.0))
    return usage.counts


def format_table(m: dict) -> str:
    rows = [
        ("dataset", f"{m['dataset']} / {m['split']} ({m['num_images']} images)"),
        ("data copy", m["data_source"]),
        ("PSNR (mean per image)", f"{m['psnr']:.2f} dB"),
        *(
            [("PSNR from stages 1, 2, ..", " / ".join(f"{v:.2f}" for v in m["psnr_stages"]))]
            if "psnr_stages" in m
            else []
        ),
        ("SSIM", f"{m['ssim']:.4f}"),
        ("MSE", f"{m['mse']:.6f}"),
        (
            "codes used",
            f"{m['codes_used']} / {m['codebook_size']} ({100 * m['codes_used_fraction']:.1f} %)",
        ),
        ("perplexity", f"{m['perplexity']:.1f}"),
        ("bits per image", f"{m['bits_per_image']:.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def split_images(model, dataset: str, data_dir: str, split: str = "test", limit: int = 0):
    """(uint8 images (N, C, H, W), DataInfo) of a split, checked against the model's input."""
    c = model.config
    images, info = load_uint8(
        dataset, data_dir, split, image_size=c.image_size, channels=c.in_channels
    )
    images = images[spread(len(images), limit)]  # evenly spread: splits may be sorted by class
    if images.shape[1:] != (c.in_channels, c.image_size, c.image_size):
        raise ValueError(
            f"{dataset} images are {tuple(images.shape[1:])}, the model takes "
            f"{(c.in_channels, c.image_size, c.image_size)}"
        )
    return images, info


def metrics_record(
    model,
    model_ref: str,
    images_u8: torch.Tensor,
    dataset: str,
    split: str,
    data_source: str,
    progress: bool = True,
) -> dict:
    """What ``evaluate`` measures, with what was measured on which data."""
    m = evaluate(model, images_u8, progress=progress)
    return {
        "model": str(model_ref),
        "dataset": dataset,
        "split": split,
        "data_source": data_source,
        "codebook_size": model.config.codebook_size,
        **m,
    }


def evaluate_model(
    model_ref: str,
    dataset: str | None,
    data_dir: str | None,
    split: str = "test",
    device: str = "cpu",
    limit: int = 0,
    progress: bool = True,
) -> dict:
    """Load a model (run folder, pretrained name or save_pretrained folder) and evaluate it."""
    model = vqvae.load_pretrained(model_ref, device=device)
    tc = read_train_config(Path(model_ref)) if Path(model_ref).is_dir() else None
    dataset = dataset or (tc or {}).get("dataset")
    data_dir = data_dir or (tc or {}).get("data_dir")
    if dataset is None or data_dir is None:
        raise ValueError("say which data to evaluate on: --dataset NAME --data-dir DIR")
    images, info = split_images(model, dataset, data_dir, split, limit)
    return metrics_record(model, model_ref, images, dataset, split, info.source, progress)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="run folder, pretrained/ name, or save_pretrained folder")
    p.add_argument("--dataset", choices=DATASETS, help="default: the run's dataset")
    p.add_argument("--data-dir", help="dataset root, e.g. ../shared/data")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, default=0, help="only N images, evenly spread")
    p.add_argument("--json", help="write the metrics here (default: print only)")
    a = p.parse_args(argv)
    try:
        m = evaluate_model(a.model, a.dataset, a.data_dir, a.split, a.device, a.limit)
    except (FileNotFoundError, ValueError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_table(m))
    if a.json:
        Path(a.json).write_text(json.dumps(m, indent=2) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
