"""The prior's figures: test NLL against two baselines, class consistency of its samples,
and sampling speed.

    python -m benchmarks.prior --model mnist --data-dir ../shared/data
    python -m benchmarks.prior --model cifar10 --data-dir ../shared/data --out results.json

- NLL: mean bits per test image under the prior (given the class, and without it), against
  uniform h*w*log2 K and the unigram entropy of the test codes' usage (a model that ignores
  context, fitted to the very codes it is measured on). Goal for MNIST: at most 0.6 of the
  unigram bits.
- Class consistency: a small CNN trained here on the real training images labels ``--samples``
  class-conditional samples (decoded); the share that gets the class asked for. Its own test
  accuracy is printed beside it. Goal for MNIST: at least 90 % at temperature 1.0.
- Speed: 16 samples drawn and decoded on this machine's CPU (median of repeats; the app's
  Sample handler does this). Goal: under 300 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vqvae
from train.prior import encoded_splits, test_nll, unigram_bits
from vqvae.data import cache_dir, load_labels, load_uint8
from vqvae.files import write_json_atomic
from vqvae.prior import load_prior


def nll_figures(prior, data: dict) -> dict:
    """Test bits per image under the prior, and the two baselines on the same codes."""
    ev = test_nll(prior, data["test_codes"], data["test_labels"])
    unigram = unigram_bits(data["test_codes"], prior.codebook_size)
    return {
        **ev,
        "uniform_bits": prior.config.uniform_bits,
        "unigram_bits": unigram,
        "ratio_to_unigram": ev["bits_per_image"] / unigram,
        "ratio_to_uniform": ev["bits_per_image"] / prior.config.uniform_bits,
    }


def classifier(channels: int, size: int, classes: int) -> nn.Module:
    """A small CNN: two conv-pool stages and two linear layers."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, classes),
    )  # fmt: skip


def train_classifier(images_u8, labels, classes: int, *, epochs: int = 2, seed: int = 0):
    """Fit :func:`classifier` on uint8 images (N, C, S, S) and labels (N,) with Adam."""
    torch.manual_seed(seed)
    net = classifier(images_u8.shape[1], images_u8.shape[2], classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images_u8), generator=g).split(128):
            loss = F.cross_entropy(net(images_u8[idx].float() / 255.0), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def predict(net, images: torch.Tensor) -> torch.Tensor:
    """Classes (N,) of float images in [0, 1]."""
    return torch.cat([net(x).argmax(1) for x in images.split(500)])


@torch.no_grad()
def class_consistency(
    prior, model, net, n: int, *, temperature: float = 1.0, guidance: float = 1.0, seed: int = 0
) -> dict:
    """Share of ``n`` class-conditional samples (an equal number per class) that ``net``
    labels with the class they were drawn for; also per class."""
    classes = prior.num_classes
    labels = torch.arange(n) % classes
    g = torch.Generator(prior.device).manual_seed(seed)
    got = []
    for chunk in labels.split(250):
        codes = prior.sample(
            len(chunk), chunk, temperature=temperature, guidance=guidance, generator=g
        )
        got.append(predict(net, model.decode(codes).float().cpu()))
    hit = torch.cat(got) == labels
    return {
        "samples": n,
        "temperature": temperature,
        "guidance": guidance,
        "accuracy": hit.float().mean().item(),
        "per_class": [hit[labels == c].float().mean().item() for c in range(classes)],
    }


@torch.no_grad()
def sampling_speed(prior, model, n: int = 16, repeats: int = 5) -> dict:
    """Median seconds to draw ``n`` grids and decode them (after one warm-up)."""
    label = 0 if prior.num_classes else None
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        model.decode(prior.sample(n, label, generator=torch.Generator().manual_seed(i)))
        times.append(time.perf_counter() - t)
    return {"n": n, "seconds": statistics.median(times[1:]), "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.prior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="mnist", help="VQ-VAE name or folder")
    p.add_argument("--prior", help="prior name or folder (default: the model's)")
    p.add_argument("--dataset", help="default: the model's name")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--samples", type=int, default=1000, help="for class consistency")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--classifier-epochs", type=int, default=2)
    p.add_argument("--codes-cache", help="folder for the encoded splits (default: vqvae cache)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    a = p.parse_args(argv)

    model = vqvae.load_pretrained(a.model)
    prior = load_prior(a.prior or a.model, model=model)
    dataset = a.dataset or model.config.name
    cache = Path(a.codes_cache) if a.codes_cache else cache_dir() / "prior-codes"
    data = encoded_splits(model, dataset, a.data_dir, cache)
    result = {"model": a.model, "dataset": dataset, "data_source": data["data_source"]}
    result["nll"] = nll_figures(prior, data)
    if prior.num_classes:
        c = model.config
        images, _ = load_uint8(dataset, a.data_dir, "train", image_size=c.image_size,
                               channels=c.in_channels)  # fmt: skip
        labels, _ = load_labels(dataset, a.data_dir, "train")
        net = train_classifier(images, labels, prior.num_classes, epochs=a.classifier_epochs)
        test_images, _ = load_uint8(dataset, a.data_dir, "test", image_size=c.image_size,
                                    channels=c.in_channels)  # fmt: skip
        test_labels, _ = load_labels(dataset, a.data_dir, "test")
        acc = (predict(net, test_images.float() / 255.0) == test_labels).float().mean().item()
        result["classifier_test_accuracy"] = acc
        result["class_consistency"] = class_consistency(
            prior, model, net, a.samples, temperature=a.temperature, guidance=a.guidance
        )
    result["speed"] = sampling_speed(prior, model)

    nll = result["nll"]
    rows = [
        ("test bits per image, under the prior", f"{nll['bits_per_image']:.1f}"),
        ("  without the class", f"{nll['bits_unconditional']:.1f}"),
        ("  unigram (code usage entropy)", f"{nll['unigram_bits']:.1f}"),
        ("  uniform (h*w*log2 K)", f"{nll['uniform_bits']:.0f}"),
        ("  ratio to unigram (goal <= 0.6 on MNIST)", f"{nll['ratio_to_unigram']:.3f}"),
    ]
    if "class_consistency" in result:
        cc = result["class_consistency"]
        rows += [
            (f"class consistency, {cc['samples']} samples, T={cc['temperature']}, "
             f"g={cc['guidance']}", f"{100 * cc['accuracy']:.1f} %"),
            ("  the classifier's test accuracy", f"{100 * acc:.1f} %"),
        ]  # fmt: skip
    sp = result["speed"]
    rows.append((f"{sp['n']} samples decoded ({sp['threads']} threads)",
                 f"{1000 * sp['seconds']:.0f} ms"))  # fmt: skip
    print(f"prior of {a.model} ({result['data_source']}, test split)\n")
    print("| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if a.out:
        write_json_atomic(a.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
