"""vqvae.parallel: pieces of one job on several threads, in order, with the caller's autograd
state; tiles and the inspector's distances on several workers equal the one-thread results."""

import threading

import pytest
import torch

import vqvae
from vqvae.codes import latent_distances
from vqvae.parallel import thread_map


def test_thread_map_keeps_the_order_and_uses_several_threads():
    seen = set()
    both_in = threading.Barrier(2, timeout=10)  # passes only if two pieces run at once

    def piece(i):
        seen.add(threading.get_ident())
        if i < 2:
            both_in.wait()
        return i * i

    assert list(thread_map(piece, range(9), workers=2)) == [i * i for i in range(9)]
    assert len(seen) == 2 and threading.get_ident() not in seen


def test_one_worker_runs_in_the_calling_thread_each_when_asked():
    calls = []
    it = thread_map(lambda i: calls.append((i, threading.get_ident())) or i, range(3))
    assert calls == []  # nothing computed before a result is asked for
    assert next(it) == 0 and calls == [(0, threading.get_ident())]
    assert list(it) == [1, 2]


def test_the_callers_autograd_state_reaches_the_workers():
    w = torch.ones(3, requires_grad=True)

    def mul(_):
        return w * 2

    with torch.no_grad():
        assert not any(t.requires_grad for t in thread_map(mul, range(4), workers=2))
    with torch.inference_mode():
        assert all(t.is_inference() for t in thread_map(mul, range(4), workers=2))
    assert all(t.requires_grad for t in thread_map(mul, range(4), workers=2))


def test_an_error_in_a_piece_is_raised_to_the_caller():
    def piece(i):
        if i == 3:
            raise RuntimeError("piece 3 failed")
        return i

    with pytest.raises(RuntimeError, match="piece 3 failed"):
        list(thread_map(piece, range(6), workers=2))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2", None])
def test_workers_must_be_a_positive_int(workers):
    with pytest.raises(ValueError, match="workers must be a positive number"):
        list(thread_map(abs, [1, 2], workers))


def test_tiles_on_several_workers_equal_the_tiles_on_one(tiny_config):
    model = vqvae.VQVAE(tiny_config).eval()
    x = torch.rand(2, tiny_config.in_channels, 53, 70)  # padded, 4 x 5 tiles of 4 x 4 cells
    codes, z = model.encode_image(x, tile=16, return_latents=True)
    codes2, z2 = model.encode_image(x, tile=16, workers=3, return_latents=True)
    assert torch.equal(codes2, codes) and torch.equal(z2, z)
    y = model.decode_codes(codes, x.shape[-2:], tile=16)
    assert torch.equal(model.decode_codes(codes, x.shape[-2:], tile=16, workers=3), y)
    with pytest.raises(ValueError, match="workers must be a positive number"):
        model.encode_image(x, tile=16, workers=0)


def test_latent_distances_on_several_workers_equal_one(tiny_config):
    model = vqvae.VQVAE(tiny_config).eval()
    x = torch.rand(1, tiny_config.in_channels, 45, 61)
    codes, z_e = model.encode_image(x, return_latents=True)
    one = latent_distances(model, z_e, codes, 4, chunk=16)
    for workers in (2, 5):
        many = latent_distances(model, z_e, codes, 4, chunk=16, workers=workers)
        assert torch.equal(many[0], one[0]) and torch.equal(many[1], one[1])
    # chunks shrink so that every worker has one: the same result
    whole = latent_distances(model, z_e, codes, 4, workers=2)
    assert torch.equal(whole[0], one[0]) and torch.allclose(whole[1], one[1])
