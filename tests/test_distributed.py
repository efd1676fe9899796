"""Two gloo processes feeding different data keep identical codebooks (EMA, k-means init,
dead-code restarts are all synchronised)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import vqvae
from tools.ports import free_port


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        vq = vqvae.VectorQuantizer(16, 4, use_ema=True, decay=0.9, dead_code_threshold=2).train()
        assert vq.dead_code_threshold == 2
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
        save_file(
            {
                "codebook": vq.codebook.detach().contiguous(),
                "ema_cluster_size": vq.ema_cluster_size,
                "ema_embed_sum": vq.ema_embed_sum,
                "steps_unused": vq.steps_unused,
                "after_kmeans": after_kmeans,
                "restarted": torch.tensor(restarted),
            },
            f"{out_dir}/rank{rank}.safetensors",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_codebooks_identical_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = load_file(tmp_path / "rank0.safetensors")
    r1 = load_file(tmp_path / "rank1.safetensors")
    for key in ("after_kmeans", "codebook", "ema_cluster_size", "ema_embed_sum", "steps_unused"):
        assert torch.equal(r0[key], r1[key]), key
    # k-means saw both ranks' samples: rank 0's around 0, rank 1's around (3, 3, 3, 3),
    # 6 apart; without the gather no code lands within 5 of rank 1's
    for centre in (0.0, 3.0):
        assert (r0["after_kmeans"] - centre).norm(dim=1).min() < 2.5, centre
    assert torch.isfinite(r0["codebook"]).all()
    assert int(r0["restarted"]) > 0
