"""python -m train.prior export RUN --name NAME: write a trained prior into pretrained/NAME/
beside its VQ-VAE, with its test NLL and a section of the model card."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import vqvae
from vqvae.data import DatasetNotFoundError
from vqvae.files import atomic_write, write_json_atomic
from vqvae.prior import load_prior

from .options import TrainError
from .prior import encoded_splits, test_nll, unigram_bits
from .runs import TRAIN_CONFIG, RunError, read_train_config

ROOT = Path(__file__).resolve().parent.parent


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
