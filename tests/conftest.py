"""Shared fixtures: a small real MNIST sample, a tiny fast config, and an isolated cache."""

import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vqvae

DATA = Path(__file__).parent / "data"
# The test models are tiny: a second OpenMP thread only adds synchronisation, and on a busy
# machine its spin-waits make a 5 ms forward take half a second.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Tests never write to ~/.cache, and every test starts from the same random state."""
    monkeypatch.setenv("VQVAE_CACHE", str(tmp_path / "vqvae-cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist_small():
    """512 train + 128 test MNIST digits (tests/data/mnist_small.npz): float images in [0, 1]
    of shape (N, 1, 28, 28) and int64 labels (N,). Do not modify in place."""
    d = np.load(DATA / "mnist_small.npz")
    return SimpleNamespace(
        train=torch.from_numpy(d["train_images"]).float() / 255.0,
        train_labels=torch.from_numpy(d["train_labels"]),
        test=torch.from_numpy(d["test_images"]).float() / 255.0,
        test_labels=torch.from_numpy(d["test_labels"]),
    )


@pytest.fixture
def tiny_config():
    """The MNIST preset (EMA + restarts, 28x28x1 -> 7x7) shrunk to run in milliseconds."""
    return vqvae.preset(
        "mnist",
        hidden_channels=16,
        res_channels=8,
        res_layers=1,
        embedding_dim=8,
        codebook_size=32,
        name="tiny",
    )


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """An idx file as torchvision's MNIST reads it: magic, big-endian dims, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """The small MNIST sample as torchvision's idx files: ``--preset mnist --data-dir`` it."""
    d = np.load(DATA / "mnist_small.npz")
    root = tmp_path_factory.mktemp("mnist-idx")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", d[f"{split}_images"][:, 0], 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", d[f"{split}_labels"], 0x801)
    return root


# -- the app -------------------------------------------------------------------------------
# Model folders as the app finds them, and one running app; gradio and the app are imported
# inside the fixtures, so tests that use none of them do not pay for the import.


@pytest.fixture(scope="session")
def plain_models(tmp_path_factory):
    """Tiny random models, no priors (app_helpers.make_models): mnist (7x7 codes) and
    cifar10 (8x8), K=32, with example images. -> .root, .models, .examples"""
    from app_helpers import make_models

    root = tmp_path_factory.mktemp("plain-models")
    models, examples = make_models(root)
    return SimpleNamespace(root=root, models=models, examples=examples)


@pytest.fixture(scope="session")
def prior_models(tmp_path_factory, mnist_dir):
    """The same models with priors: mnist has a class-conditional prior and code patches
    (train.export over the small MNIST sample), cifar10 neither but a grid prior (its
    photos' cells can be resampled), and "other", a second 28x28 model, its own prior.
    -> .root, .models, .examples"""
    from app_helpers import add_grid_prior, add_model, add_prior, make_models
    from train.export import export_patches

    root = tmp_path_factory.mktemp("prior-models")
    models, examples = make_models(root)
    add_prior(models / "mnist")
    add_grid_prior(models / "cifar10")
    export_patches(models / "mnist", "mnist", str(mnist_dir))
    add_model(models, "other", like="mnist", seed=5)
    add_prior(models / "other", seed=2)
    return SimpleNamespace(root=root, models=models, examples=examples)


@pytest.fixture(scope="module")
def h(plain_models, tmp_path_factory):
    """The app's handlers over ``plain_models`` (one set per test module); modules over other
    models define their own ``h``."""
    import explorer

    return explorer.Handlers(
        plain_models.models, plain_models.examples, cache_dir=tmp_path_factory.mktemp("cache")
    )


@pytest.fixture(scope="session")
def grid_prior_models(tmp_path_factory):
    """The plain models (the same weights), cifar10 with a tiny grid prior
    (app_helpers.add_grid_prior): its photos' cells can be resampled. -> .root, .models,
    .examples"""
    from app_helpers import add_grid_prior, make_models

    root = tmp_path_factory.mktemp("grid-prior-models")
    models, examples = make_models(root)
    add_grid_prior(models / "cifar10")
    return SimpleNamespace(root=root, models=models, examples=examples)


@pytest.fixture(scope="session")
def live_app(prior_models, tmp_path_factory):
    """One running app over ``prior_models`` on a free port: .url, .client (gradio_client),
    .demo, .handlers, .examples."""
    from gradio_client import Client

    import explorer
    from tools.ports import free_port

    cache = tmp_path_factory.mktemp("live-cache")
    demo, handlers = explorer.build_app(prior_models.models, prior_models.examples, cache)
    port = free_port()
    explorer.launch(demo, handlers, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield SimpleNamespace(
            url=url,
            client=Client(url, verbose=False),
            demo=demo,
            handlers=handlers,
            examples=prior_models.examples,
        )
    finally:
        demo.close()
