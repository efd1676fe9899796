"""The training forward (encoder, quantizer with EMA and dead-code restarts, decoder, loss)
compiles with torch.compile as one graph: no host sync, no data-dependent Python branch.
``fullgraph=True`` raises on any graph break, so these tests fail on one."""

import copy

import pytest
import torch

import vqvae

THRESHOLD = 2  # restarts fire from the second step on


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """A clean compile cache, and any recompile is an error: a step that reads a tensor's
    value into Python (``float(ema_updates)``) is specialised on it and recompiled every
    step, which fullgraph alone does not catch."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()


def _config(tiny_config, use_ema=True):
    return tiny_config.replace(use_ema=use_ema, dead_code_threshold=THRESHOLD)


def _step(model, x, quantize=True):
    out = model(x, quantize=quantize)
    return out.loss, out


# Graph ops that read a tensor's value back to the host (a sync on a GPU, and no CUDA graph).
# Newer dynamo captures ``float(t)`` / ``t.item()`` into the graph instead of breaking it.
HOST_SYNCS = {"item", "tolist", "_local_scalar_dense", "nonzero", "numpy", "__bool__"}


class Recorder:
    """A torch.compile backend that keeps every graph dynamo captures and runs it eagerly."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward

    def host_syncs(self) -> list[str]:
        return [
            str(node)
            for gm in self.graphs
            for node in gm.graph.nodes
            if getattr(node.target, "__name__", str(node.target)) in HOST_SYNCS
        ]


@pytest.mark.parametrize("use_ema", [True, False])
def test_training_forward_is_one_graph(tiny_config, mnist_small, use_ema):
    """Dynamo's capture alone (fast, and where graph breaks happen): one graph, captured
    once, with no op that reads a value back to the host."""
    model = vqvae.VQVAE(_config(tiny_config, use_ema)).train()
    eager = copy.deepcopy(model)
    recorder = Recorder()
    compiled = torch.compile(_step, fullgraph=True, backend=recorder)
    for i in range(3):
        x = mnist_small.train[i * 16 : (i + 1) * 16]
        torch.manual_seed(i)
        loss, out = compiled(model, x)
        loss.backward()
        torch.manual_seed(i)
        loss_e, out_e = _step(eager, x)
        assert torch.equal(out.indices, out_e.indices)
        torch.testing.assert_close(loss, loss_e)
    assert len(recorder.graphs) == 1
    for key, value in eager.state_dict().items():  # EMA, restarts: the same updates
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    assert recorder.host_syncs() == []
    assert float(model.quantizer.ema_updates) == (3.0 if use_ema else 0.0)
    assert model.quantizer.steps_unused.max() < THRESHOLD  # restarts ran in the graph
    if use_ema:  # the pre-training forward too (once: each compile takes seconds)
        recorder = Recorder()
        pretrain = torch.compile(
            lambda m, x: _step(m, x, quantize=False), fullgraph=True, backend=recorder
        )
        loss, out = pretrain(model, mnist_small.train[:16])
        assert out.indices is None and torch.isfinite(loss)
        assert len(recorder.graphs) == 1 and recorder.host_syncs() == []


@pytest.mark.slow
def test_compiled_training_step_matches_eager(tiny_config, mnist_small):
    """Through AOTAutograd (backend "aot_eager": the graphs inductor would get, run by
    eager kernels, so restarts draw the same random rows): forward, loss, gradients, the
    EMA statistics and restarts are those of the eager step."""
    config = _config(tiny_config)
    torch.manual_seed(0)
    eager = vqvae.VQVAE(config).train()
    model = copy.deepcopy(eager)
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    restarted = 0
    for i in range(4):
        x = mnist_small.train[i * 16 : (i + 1) * 16]
        due = eager.quantizer.steps_unused >= THRESHOLD - 1  # restarted now unless chosen
        torch.manual_seed(100 + i)
        loss_c, out_c = compiled(model, x)
        torch.manual_seed(100 + i)
        loss_e, out_e = _step(eager, x)
        restarted += int((due & ~torch.isin(torch.arange(32), out_e.indices)).sum())
        assert torch.equal(out_c.indices, out_e.indices)
        torch.testing.assert_close(loss_c, loss_e)
        torch.testing.assert_close(out_c.reconstruction, out_e.reconstruction)
        torch.testing.assert_close(out_c.perplexity, out_e.perplexity)
        assert int(out_c.codes_used) == int(out_e.codes_used)
        loss_c.backward()
        loss_e.backward()
        for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, msg=name)
            p.grad = q.grad = None
    assert restarted > 0  # the test exercised restarts, not only the EMA
    compiled_state, eager_state = model.state_dict(), eager.state_dict()
    for key in ("ema_updates", "steps_unused", "ema_cluster_size", "ema_embed_sum", "embedding"):
        key = f"quantizer.{key}"
        assert compiled_state[key].dtype == eager_state[key].dtype, key
        torch.testing.assert_close(compiled_state[key], eager_state[key], msg=key)


def test_training_forward_does_not_read_the_data_back(tiny_config):
    """The value-range check (a host sync) is not in the training step: the training loop
    checks its data once; the public API and the eval forward still check."""
    model = vqvae.VQVAE(tiny_config).train()
    x = torch.rand(2, 1, 28, 28) * 2  # out of range: only a check that reads values sees it
    recorder = Recorder()
    compiled = torch.compile(_step, fullgraph=True, backend=recorder)
    compiled(model, x)  # fullgraph: a bool(tensor) in the step would raise here
    assert recorder.host_syncs() == []
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        vqvae.model.check_image_range(x)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        model.check_images(x)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        model.encode(x)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        model.eval()(x)
    with pytest.raises(ValueError, match="NaN"):
        vqvae.model.check_image_range(torch.full((3,), float("nan")))
    # the shape checks stay in every forward
    with pytest.raises(ValueError, match="takes 1-channel images"):
        model.train()(torch.rand(1, 3, 28, 28))
