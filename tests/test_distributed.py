"""Two gloo processes feeding different data keep identical codebooks (EMA, k-means init,
dead-code restarts are all synchronised), and what they compute is what one process would
compute on both ranks' data together."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import vqvae
from tools.ports import free_port


def _rank_data(rank: int):
    """Each rank's own data: k-means samples (uneven counts per rank) and three latent
    batches, deterministic so the test process can rebuild them."""
    g = torch.Generator().manual_seed(500 + rank)
    samples = torch.randn(40 + 24 * rank, 4, generator=g) + 3 * rank
    batches = [torch.randn(2, 4, 3, 3, generator=g) + 3 * rank for _ in range(3)]
    return samples, batches


def _far_codebook() -> torch.Tensor:
    """Codes 0 and 1 on the data, codes 2..15 far from every rank's data."""
    far = torch.full((16, 4), 100.0) + torch.arange(16.0)[:, None]
    far[0], far[1] = 0.0, 3.0
    return far


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        vq = vqvae.VectorQuantizer(
            16, 4, use_ema=True, ema_decay=0.9, dead_code_threshold=2
        ).train()
        # k-means on a different number of samples per rank (uneven all_gather)
        vq.init_kmeans(torch.randn(40 + 24 * rank, 4, generator=g) + 3 * rank)
        after_kmeans = vq.codebook.detach().clone()
        restarted = 0
        for step in range(6):
            # a narrow batch: most codes go unused and are restarted from it
            z = torch.randn(2, 4, 3, 3, generator=g) * 0.3 + (step % 3) + rank
            due = vq.steps_unused == 1  # restarted now unless chosen in this step
            vq(z)
            restarted += int((due & (vq.steps_unused == 0)).sum())

        # EMA without restarts, to compare with one process on both ranks' data
        samples, batches = _rank_data(rank)
        ema = vqvae.VectorQuantizer(16, 4, use_ema=True, ema_decay=0.9).train()
        ema.init_kmeans(samples)
        ema_kmeans = ema.codebook.detach().clone()
        counts = []
        for z in batches:
            counts.append(torch.bincount(ema(z).indices.flatten(), minlength=16))

        # restarts without EMA: every code no rank chose is re-seeded from rank 0's batch
        rs = vqvae.VectorQuantizer(16, 4, dead_code_threshold=1).train()
        rs.set_codebook(_far_codebook())
        rs(batches[0])

        save_file(
            {
                "codebook": vq.codebook.detach().contiguous(),
                "ema_cluster_size": vq.ema_cluster_size,
                "ema_embed_sum": vq.ema_embed_sum,
                "steps_unused": vq.steps_unused,
                "after_kmeans": after_kmeans,
                "restarted": torch.tensor(restarted),
                "ema_kmeans": ema_kmeans,
                "ema_codebook": ema.codebook.detach().contiguous(),
                "ema_ema_cluster_size": ema.ema_cluster_size,
                "ema_ema_embed_sum": ema.ema_embed_sum,
                "ema_counts": torch.stack(counts),
                "restart_codebook": rs.codebook.detach().contiguous(),
                "restart_steps_unused": rs.steps_unused,
            },
            f"{out_dir}/rank{rank}.safetensors",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of two gloo ranks computed (one spawn for all the tests here)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")


@pytest.mark.slow
def test_codebooks_identical_across_ranks(ranks):
    r0, r1 = ranks
    for key in ("after_kmeans", "codebook", "ema_cluster_size", "ema_embed_sum", "steps_unused"):
        assert torch.equal(r0[key], r1[key]), key
    # k-means saw both ranks' samples: rank 0's around 0, rank 1's around (3, 3, 3, 3),
    # 6 apart; without the gather no code lands within 5 of rank 1's
    for centre in (0.0, 3.0):
        assert (r0["after_kmeans"] - centre).norm(dim=1).min() < 2.5, centre
    assert torch.isfinite(r0["codebook"]).all()
    assert int(r0["restarted"]) > 0


@pytest.mark.slow
def test_two_ranks_compute_what_one_process_computes_on_all_the_data(ranks):
    """k-means on the gathered samples, EMA statistics summed over ranks: the same numbers
    as a single process given the concatenation of both ranks' data."""
    r0, r1 = ranks
    (s0, b0), (s1, b1) = _rank_data(0), _rank_data(1)
    ref = vqvae.VectorQuantizer(16, 4, use_ema=True, ema_decay=0.9).train()
    ref.init_kmeans(torch.cat([s0, s1]))
    for key in ("ema_kmeans", "ema_codebook", "ema_ema_cluster_size", "ema_ema_embed_sum"):
        assert torch.equal(r0[key], r1[key]), key
    assert torch.allclose(r0["ema_kmeans"], ref.codebook.detach(), atol=1e-6)
    local_counts = r0["ema_counts"] + r1["ema_counts"]
    for step, (z0, z1) in enumerate(zip(b0, b1, strict=True)):
        out = ref(torch.cat([z0, z1]))
        # each rank counted its own batch; together they are the whole batch's counts
        assert torch.equal(local_counts[step], torch.bincount(out.indices.flatten(), minlength=16))
    assert torch.allclose(r0["ema_ema_cluster_size"], ref.ema_cluster_size, atol=1e-5)
    assert torch.allclose(r0["ema_ema_embed_sum"], ref.ema_embed_sum, atol=1e-5)
    assert torch.allclose(r0["ema_codebook"], ref.codebook.detach(), atol=1e-5)


@pytest.mark.slow
def test_restarts_copy_rank_0s_picks_to_every_rank(ranks):
    r0, r1 = ranks
    assert torch.equal(r0["restart_codebook"], r1["restart_codebook"])
    rows0 = _rank_data(0)[1][0].permute(0, 2, 3, 1).reshape(-1, 4)
    rows1 = _rank_data(1)[1][0].permute(0, 2, 3, 1).reshape(-1, 4)
    cb = r0["restart_codebook"]
    far = _far_codebook()
    # a code some rank chose is kept; the others were dead and now hold rows of rank 0's batch
    kept = [k for k in range(16) if torch.equal(cb[k], far[k])]
    assert kept and set(kept) <= {0, 1}
    for k in set(range(16)) - set(kept):
        assert any(torch.equal(cb[k], r) for r in rows0), k
        assert not any(torch.equal(cb[k], r) for r in rows1), k
    assert not r0["restart_steps_unused"].any()
