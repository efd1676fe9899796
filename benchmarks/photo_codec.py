"""The photo codec's figures (format 3 under a grid prior): per photo of the suite and per
rate, the file's bits per pixel, PSNR, compress and decompress time and an exact round
trip; then, on CIFAR-10 test thumbnails, bits per image under the grid prior beside the
model's raster prior (which one the thumbnail codec should use).

    python -m benchmarks.photo_codec --model cifar10 --data-dir data
    python -m benchmarks.photo_codec --model cifar10 --photos astronaut --repeat 3

Targets: compress and decompress a 512 x 512 photo (astronaut) in <= 1 s each on 2 cores;
every round trip exact. Times are the best of --repeat runs on this machine's CPU with the
process's torch threads (2 here).
"""

from __future__ import annotations

import argparse
import time

import torch

import vqvae
from train.prior import test_nll
from vqvae.codec import compress_image, decompress_image, rates
from vqvae.codec.photo import choose_codes, decompress_codes_v3
from vqvae.data import PHOTO_SUITE, load_uint8, spread, suite_photo
from vqvae.files import write_json_atomic
from vqvae.metrics import psnr

TARGET_S = 1.0  # compress and decompress of a 512 x 512 photo


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def measure_photo(
    model, prior, name: str, repeat: int, rdo: float = 0.0, refine: int = 0
) -> list[dict]:
    """One row per rate for the suite photo ``name`` (``rdo``: codes chosen for error +
    rdo x bits, vqvae.codec.rdo; ``refine``: latents refined for that many steps first,
    vqvae.codec.refine)."""
    x = torch.from_numpy(suite_photo(name)).permute(2, 0, 1)[None].float() / 255.0
    H, W = x.shape[-2:]
    rows = []
    for i, r in enumerate(rates(model)):
        t_c, f = best_time(
            lambda i=i: compress_image(model, prior, x, rate=i, rdo=rdo, refine=refine), repeat
        )
        t_d, y = best_time(lambda f=f: decompress_image(model, prior, f), repeat)
        codes, _ = decompress_codes_v3(model, prior, f)
        exact = torch.equal(codes, choose_codes(model, prior, x, r, rdo=rdo, refine=refine))
        rows.append({
            "photo": name, "size": f"{W}x{H}", "rate": r.name, "bytes": len(f),
            "bpp": 8 * len(f) / (H * W), "psnr": float(psnr(y, x)),
            "compress_s": t_c, "decompress_s": t_d, "exact": exact,
        })  # fmt: skip
    return rows


def thumbnail_bits(model, prior, raster, data_dir, limit: int) -> dict:
    """Mean bits per CIFAR-10 test thumbnail (its codes) under the grid prior and the raster
    prior, on ``limit`` evenly spread test images."""
    test, _ = load_uint8("cifar10", data_dir, "test", image_size=32, channels=3)
    codes = model.encode(test[spread(len(test), limit)].float() / 255.0)
    grid_bits = float(prior.nll_bits(codes[:, None]).mean())
    out = {"images": len(codes), "grid_prior_bits": grid_bits}
    if raster is not None:
        labels = torch.full((len(codes),), -1)
        out["raster_prior_bits"] = test_nll(raster, codes, labels)["bits_per_image"]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cifar10", help="a model with a grid prior")
    p.add_argument("--photos", nargs="*", default=list(PHOTO_SUITE))
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--data-dir", default="data", help="CIFAR-10 for the thumbnail figures")
    p.add_argument("--thumbnails", type=int, default=1000, help="0 = skip")
    p.add_argument("--rdo", type=float, default=0.0, help="codes chosen for error + RDO x bits")
    p.add_argument("--refine", type=int, default=0, help="latents refined for REFINE steps first")
    p.add_argument("--out", help="write the figures as JSON")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = vqvae.load_pretrained(a.model).eval()
    prior = vqvae.GridPrior.from_pretrained(a.model)
    print(f"{a.model}: torch threads {torch.get_num_threads()}")
    print("| photo | size | rate | bytes | bits/pixel | PSNR | compress | decompress | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in a.photos:
        for r in measure_photo(model, prior, name, a.repeat, a.rdo, a.refine):
            rows.append(r)
            print(f"| {r['photo']} | {r['size']} | {r['rate']} | {r['bytes']} | {r['bpp']:.3f} "
                  f"| {r['psnr']:.2f} | {r['compress_s']:.2f} s | {r['decompress_s']:.2f} s "
                  f"| {'yes' if r['exact'] else 'NO'} |")  # fmt: skip
    result = {"model": a.model, "rdo": a.rdo, "refine": a.refine, "photos": rows}
    if a.thumbnails:
        try:
            raster = vqvae.load_prior(a.model, model=model)
        except (FileNotFoundError, ValueError):
            raster = None
        t = thumbnail_bits(model, prior, raster, a.data_dir, a.thumbnails)
        result["thumbnails"] = t
        raster_bits = t.get("raster_prior_bits", float("nan"))
        print(f"CIFAR-10 test thumbnails ({t['images']}): grid prior {t['grid_prior_bits']:.1f} "
              f"bits per image, raster prior {raster_bits:.1f}")  # fmt: skip
    if a.out:
        write_json_atomic(a.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
