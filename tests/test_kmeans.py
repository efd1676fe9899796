"""vqvae.kmeans: finds clusters, is deterministic, matches scikit-learn's quality, and says
clearly what is wrong with its input."""

import pytest
import torch

import vqvae.kmeans as km
from vqvae.kmeans import kmeans


def blobs(n_per: int, centres: torch.Tensor, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(len(centres)).repeat_interleave(n_per)
    x = centres[truth] + noise * torch.randn(len(truth), centres.shape[1], generator=g)
    perm = torch.randperm(len(x), generator=g)
    return x[perm], truth[perm]


def test_recovers_well_separated_clusters():
    means = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)) * 10
    x, truth = blobs(50, means, 0.1)
    centres, labels, inertia, n_iter = kmeans(x, 8, seed=3)
    # one label per true cluster, and back: the partition is the truth up to renaming
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 8 and len({t for t, _ in pairs}) == len({c for _, c in pairs}) == 8
    for t, c in pairs:
        assert torch.allclose(centres[c], x[truth == t].mean(0), atol=1e-4)
    assert inertia == pytest.approx(float(((x - centres[labels]) ** 2).sum()), rel=1e-5)
    assert inertia / len(x) == pytest.approx(16 * 0.1**2, rel=0.2)
    assert centres.shape == (8, 16) and labels.dtype == torch.long and 1 <= n_iter <= 3


def test_labels_are_the_nearest_centres_and_inertia_their_distances():
    x = torch.randn(700, 5, generator=torch.Generator().manual_seed(0))
    r = kmeans(x, 20, seed=0, iters=3)  # stopped early: labels still match the centres
    assert torch.equal(r.labels, torch.cdist(x, r.centres).argmin(1))
    assert r.inertia == pytest.approx(float(((x - r.centres[r.labels]) ** 2).sum()), rel=1e-5)
    assert r.n_iter == 3


def test_deterministic_for_a_seed_or_generator():
    x = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    a, b = kmeans(x, 16, seed=5), kmeans(x, 16, seed=5)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.labels, b.labels)
    c = kmeans(x, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.centres, c.centres)
    assert not torch.equal(a.centres, kmeans(x, 16, seed=6).centres)


def test_blocks_of_rows_give_the_same_result(monkeypatch):
    means = torch.randn(12, 6, generator=torch.Generator().manual_seed(2)) * 5
    x, _ = blobs(40, means, 1.0)
    whole = kmeans(x, 12, seed=0)
    monkeypatch.setattr(km, "_BLOCK", 12 * 7)  # 7 rows at a time
    blocked = kmeans(x, 12, seed=0)
    assert torch.equal(whole.labels, blocked.labels)
    assert torch.allclose(whole.centres, blocked.centres, atol=1e-5)


def test_inertia_matches_sklearn():
    """Same quality as sklearn's KMeans (as init_kmeans runs it): mean inertia over three
    seeds within 1 %. On unclustered data one run varies by ~0.3 % between seeds."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    ours = [kmeans(x, 32, seed=s).inertia for s in range(3)]
    with threadpool_limits(1):  # its OpenMP threads crawl on a shared machine
        theirs = [
            KMeans(32, n_init=1, max_iter=50, random_state=s).fit(x.numpy()).inertia_
            for s in range(3)
        ]
    print(f"inertia / sample: torch {sum(ours) / 6000:.4f}, sklearn {sum(theirs) / 6000:.4f}")
    assert sum(ours) / sum(theirs) == pytest.approx(1.0, abs=0.01)


def test_more_clusters_than_distinct_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(10, 1)
    r = kmeans(x, 3, seed=0)
    assert r.inertia == 0.0 and r.labels.max() < 3
    assert torch.equal(r.centres[r.labels], x)


def test_empty_clusters_take_the_farthest_samples():
    # two tight groups far apart and one far outlier; the initial centres all near group 0
    x = torch.cat([torch.zeros(20, 2), torch.full((20, 2), 10.0), torch.tensor([[100.0, 0]])])
    x[:20] += torch.linspace(0, 0.1, 20)[:, None]
    r = kmeans(x, 3, seed=0)
    assert r.inertia < 1.0, "every group has its own centre, the outlier included"


@pytest.mark.parametrize(
    "x, k, words",
    [
        (torch.randn(5, 2), 6, "at least K=6 samples, got 5"),
        (torch.randn(10), 2, r"samples \(N, D\)"),
        (torch.arange(20).reshape(10, 2), 2, r"float tensor"),
        (torch.randn(10, 2), 0, "positive integer"),
        (torch.randn(10, 2), 2.0, "positive integer"),
        (torch.tensor([[0.0, float("nan")]] * 4), 2, "NaN or infinite"),
    ],
)
def test_bad_input_is_a_clear_error(x, k, words):
    with pytest.raises(ValueError, match=words):
        kmeans(x, k)


def test_half_precision_samples_are_clustered_in_float32():
    means = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 10
    x, _ = blobs(25, means, 0.5)
    r = kmeans(x.half(), 4, seed=0)
    assert r.centres.dtype == torch.float32 and r.inertia / len(x) < 8 * 0.5**2 * 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_as_on_cpu():
    means = torch.randn(32, 16, generator=torch.Generator().manual_seed(0)) * 3
    x, _ = blobs(100, means, 1.0)
    xc = x.cuda()
    a, b = kmeans(xc, 32, seed=0), kmeans(xc, 32, seed=0)
    assert a.centres.is_cuda and a.labels.is_cuda
    assert torch.equal(a.centres, b.centres) and torch.equal(a.labels, b.labels)
    cpu = [kmeans(x, 32, seed=s).inertia for s in range(3)]
    gpu = [kmeans(xc, 32, seed=s).inertia for s in range(3)]
    assert sum(gpu) / sum(cpu) == pytest.approx(1.0, abs=0.01)


def test_benchmark_runs():
    from benchmarks.kmeans import main

    rows = main(["--data", "gaussian", "--n", "600", "--k", "8", "--seeds", "1", "--iters", "5"])
    assert [(r["method"], r["device"]) for r in rows][:2] == [("sklearn", "cpu"), ("torch", "cpu")]
    assert abs(rows[1]["vs_sklearn"]) < 0.2 and rows[0]["vs_sklearn"] == 0.0
