"""k-means for the codebook init: vqvae.kmeans (torch, on the samples' device) against
scikit-learn's KMeans as the quantizer's ``init_kmeans`` calls it (k-means++, n_init=1,
max_iter=50), on the same vectors: seconds, inertia per sample, iterations, and the
relative inertia difference (goal: within 1 %).

    python -m benchmarks.kmeans                           # mnist encoder outputs, 50k x 64, K=512
    python -m benchmarks.kmeans --data gaussian --dim 64  # a random Gaussian mixture
    python -m benchmarks.kmeans --threads 1 --seeds 5

The mnist vectors are what training clusters: the shipped mnist model's encoder outputs on
4096 MNIST train images (../shared/data), 50k of their 200k vectors drawn at random.
"""

from __future__ import annotations

import argparse
import time

import torch

from vqvae.kmeans import kmeans


def mnist_vectors(data_dir: str, n: int, seed: int = 0, images: int = 4096) -> torch.Tensor:
    """(n, D) encoder outputs of the shipped mnist model on MNIST train images."""
    import vqvae
    from vqvae.data import load_uint8

    model = vqvae.load_pretrained("mnist").eval()
    x, _ = load_uint8("mnist", data_dir, "train")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=g)[:images]
    with torch.no_grad():
        z = torch.cat(
            [
                model.encode_continuous(x[pick[i : i + 256]].float() / 255).float()
                for i in range(0, len(pick), 256)
            ]
        )
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    return flat[torch.randperm(len(flat), generator=g)[:n]].contiguous()


def gaussian_mixture(n: int, dim: int, k: int, seed: int = 0) -> torch.Tensor:
    """(n, dim) samples from ``k`` unit Gaussians whose means are spread with std 2."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g) * 2.0
    return means[torch.randint(k, (n,), generator=g)] + torch.randn(n, dim, generator=g)


def sklearn_kmeans(x: torch.Tensor, k: int, iters: int, seed: int, threads: int):
    """(inertia, n_iter) of sklearn's KMeans as ``VectorQuantizer.init_kmeans`` runs it."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        km = KMeans(k, n_init=1, max_iter=iters, random_state=seed).fit(x.cpu().numpy())
    return float(km.inertia_), int(km.n_iter_)


def _timed(device: str, fn, *args, **kw):
    """(wall seconds, CPU seconds of this process, fn(*args, **kw)), waiting for the device
    before and after. CPU seconds (all threads) show the work when the machine is shared."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c, out


def compare(
    x: torch.Tensor,
    k: int,
    devices: list[str],
    *,
    iters: int = 50,
    seeds: int = 1,
    threads: int = 1,
) -> list[dict]:
    """One row per method and device, averaged over seeds 0 .. seeds-1: wall and CPU
    seconds, inertia per sample (mean, min, max), iterations, and for torch its mean inertia
    relative to sklearn's. k-means lands in a different local minimum for every seed, a few
    per cent apart: compare means over several seeds, not one run."""
    torch.set_num_threads(threads)
    sklearn_kmeans(x[: 4 * k], k, 2, 0, threads)  # warm-up: imports, thread pools
    runs = {("sklearn", "cpu"): []}
    for seed in range(seeds):
        s, c, (inertia, n_iter) = _timed("cpu", sklearn_kmeans, x, k, iters, seed, threads)
        runs["sklearn", "cpu"].append((s, c, inertia, n_iter))
    for device in devices:
        xd = x.to(device)
        kmeans(xd[: 4 * k], k, iters=2)  # warm-up: kernels, allocator
        runs["torch", device] = []
        for seed in range(seeds):
            s, c, r = _timed(device, kmeans, xd, k, iters=iters, seed=seed)
            runs["torch", device].append((s, c, r.inertia, r.n_iter))
    rows = []
    ref = sum(r[2] for r in runs["sklearn", "cpu"]) / seeds
    for (method, device), rs in runs.items():
        inertia = [r[2] / len(x) for r in rs]
        rows.append(
            dict(
                method=method,
                device=device,
                s=sum(r[0] for r in rs) / seeds,
                cpu_s=sum(r[1] for r in rs) / seeds,
                inertia=sum(inertia) / seeds,
                inertia_min=min(inertia),
                inertia_max=max(inertia),
                n_iter=sum(r[3] for r in rs) / seeds,
                vs_sklearn=sum(r[2] for r in rs) / seeds / ref - 1.0,
            )
        )
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", choices=["mnist", "gaussian"], default="mnist")
    p.add_argument("--data-dir", default="../shared/data", help="where MNIST is (--data mnist)")
    p.add_argument("--n", type=int, default=50_000, help="vectors to cluster")
    p.add_argument("--k", type=int, default=512, help="clusters (codebook size)")
    p.add_argument("--dim", type=int, default=64, help="vector size (--data gaussian)")
    p.add_argument("--iters", type=int, default=50, help="at most this many Lloyd iterations")
    p.add_argument("--seed", type=int, default=0, help="which vectors (the methods use 0, 1...)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--seeds", type=int, default=3, help="runs per method (seeds 0, 1, ...)")
    p.add_argument(
        "--devices",
        default="cpu,cuda" if torch.cuda.is_available() else "cpu",
        help="devices for the torch k-means, comma-separated",
    )
    a = p.parse_args(argv)
    if a.data == "mnist":
        x = mnist_vectors(a.data_dir, a.n, a.seed)
        what = "mnist encoder outputs"
    else:
        x = gaussian_mixture(a.n, a.dim, a.k, a.seed)
        what = f"Gaussian mixture of {a.k}"
    print(
        f"{what}: {len(x)} x {x.shape[1]}, K={a.k}, max_iter={a.iters}, data seed {a.seed}, "
        f"{a.threads} CPU thread(s), torch {torch.__version__}"
    )
    rows = compare(
        x,
        a.k,
        a.devices.split(","),
        iters=a.iters,
        threads=a.threads,
        seeds=a.seeds,
    )
    print(f"means over {a.seeds} seed(s)")
    print(
        "| method | device | wall s | CPU s | inertia / sample (min-max) | iterations "
        "| inertia vs sklearn |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['device']} | {r['s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['inertia']:.5g} ({r['inertia_min']:.5g}-{r['inertia_max']:.5g}) | "
            f"{r['n_iter']:.1f} | {100 * r['vs_sklearn']:+.2f} % |"
        )
    return rows


if __name__ == "__main__":
    main()
