"""Shared by the app tests: folders of tiny random models as the app expects them (with
codebook.json, metrics.json, a model card, optionally a prior), example images, and ways to
talk to a running app. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vqvae
from prior_helpers import peaked_prior
from vqvae.files import write_json_atomic
from vqvae.prior import CodePrior, PriorConfig

DATA = Path(__file__).parent / "data" / "mnist_small.npz"
TINY = dict(hidden_channels=16, res_channels=8, res_layers=1, embedding_dim=8, codebook_size=32)
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits(n: int = 6) -> np.ndarray:
    """``n`` MNIST test digits, uint8 (n, 28, 28), white on black."""
    return np.load(DATA)["test_images"][:n, 0]


def make_models(root: Path) -> tuple[Path, Path]:
    """Write ``root/models/{mnist,cifar10}`` (tiny random VQ-VAEs: 7x7 and 8x8 codes, K=32)
    and ``root/examples/<name>/*.png``; returns (models_dir, examples_dir)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    models, examples = root / "models", root / "examples"
    imgs = digits()
    for name in ("mnist", "cifar10"):
        model = vqvae.VQVAE(vqvae.preset(name, **TINY))
        d = models / name
        model.save_pretrained(d)
        K = model.config.codebook_size
        usage = rng.integers(0, 1000, K) * (rng.random(K) > 0.25)
        write_json_atomic(
            d / "codebook.json",
            {
                "usage": usage.tolist(),
                "umap_2d": rng.normal(size=(K, 2)).round(3).tolist(),
                "umap_3d": rng.normal(size=(K, 3)).round(3).tolist(),
            },
        )
        write_json_atomic(
            d / "metrics.json",
            dict(
                dataset=name,
                data_source="random weights (test)",
                psnr=10.0,
                ssim=0.1,
                mse=0.1,
                codes_used=int((usage > 0).sum()),
                codes_used_fraction=float((usage > 0).mean()),
                perplexity=20.0,
                bits_per_image=model.config.bits_per_image,
                num_images=6,
            ),
        )
        (d / "README.md").write_text(f"# {name} (test model)\n\nRandom weights.\n")
        ex = examples / name
        ex.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            if name == "cifar10":
                img = np.stack([img, np.roll(img, 2, 0), 255 - img], -1)
            Image.fromarray(img).save(ex / f"{i:02d}.png")
    return models, examples


def add_prior(model_dir: Path, *, seed: int = 1) -> CodePrior:
    """A tiny class-conditional prior with CLASS_NAMES (random weights, far from the init so
    that its distributions are peaked and classes matter, as a trained prior's are), saved
    beside the model in ``model_dir`` as the app finds priors."""
    model = vqvae.load_pretrained(model_dir)
    config = PriorConfig.for_model(
        model, num_classes=10, class_names=CLASS_NAMES, d_model=32, n_layers=2, n_heads=2
    )
    prior = peaked_prior(config, seed=seed, std=0.5)
    prior.save_pretrained(model_dir)
    return prior


def add_grid_prior(model_dir: Path, *, seed: int = 0):
    """A tiny frozen grid prior (test_grid_prior.small_prior: trained a few steps, so its
    distributions are not flat) tied to the model in ``model_dir``, saved beside it as the
    app finds grid priors."""
    from test_grid_prior import small_prior

    from vqvae.grid_prior import stage_fingerprint

    model = vqvae.load_pretrained(model_dir)
    prior = small_prior(K=model.config.codebook_size, S=1, seed=seed)
    prior.config.vqvae_fingerprint = stage_fingerprint(model)
    prior.config.vqvae_name = model.config.name
    prior.save_pretrained(model_dir)
    return prior


def add_model(models: Path, name: str, like: str, *, seed: int) -> None:
    """Another tiny model of the same preset as ``models/like``, with its own weights (seed)
    and ``like``'s codebook.json (or the app would compute a UMAP, ~30 s, on loading it)."""
    torch.manual_seed(seed)
    vqvae.VQVAE(vqvae.load_pretrained(models / like).config).save_pretrained(models / name)
    (models / name / "codebook.json").write_bytes((models / like / "codebook.json").read_bytes())


def gif_ms(path) -> int:
    """How long a GIF plays once, ms (Pillow merges identical consecutive frames, adding
    their delays: count time, not frames)."""
    with Image.open(path) as im:
        total = 0
        for i in range(im.n_frames):
            im.seek(i)
            total += im.info["duration"]
    return total


def call_event(
    url: str, fn_index: int, data: list, event_data=None, timeout: float = 60, session=None
) -> dict:
    """Send one event to a running app over HTTP, as any client can, private events included:
    POST /gradio_api/queue/join, then read the server-sent events until the event completes.
    ``session``: the session hash (default: a new session).
    Returns the final message: {"success": bool, "output": {"data": [...]} or {"error": ...}}."""
    import json
    import uuid

    import httpx

    session = session or uuid.uuid4().hex
    with httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=timeout) as http:
        body = {"data": data, "event_data": event_data, "fn_index": fn_index}
        join = http.post(  # json.dumps, not httpx's json=: clients may send NaN and Infinity
            "/queue/join",
            content=json.dumps({**body, "session_hash": session}),
            headers={"Content-Type": "application/json"},
        )
        join.raise_for_status()
        with http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        return msg
    raise AssertionError("the event stream ended without process_completed")


def fn_index(demo, api_name: str) -> int:
    """The fn_index of the event registered under ``api_name``."""
    return next(i for i, f in demo.fns.items() if f.api_name == api_name)


def run_api_doc_blocks(url: str, examples) -> int:
    """Run every Python block of docs/api.md against the server at ``url`` (an app whose
    mnist model has a prior) with its example images in ``examples``. Returns how many ran."""
    doc = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    blocks = re.findall(r"```py(?:thon)?\n(.*?)```", doc, flags=re.S)
    for code in blocks:
        # the test models' examples have no photos folder: cifar10's are 28 x 28 colour
        # images, which its grid prior codes as photos too
        code = code.replace("assets/examples/photos/chelsea.jpg", "assets/examples/cifar10/00.png")
        code = code.replace("http://127.0.0.1:7860/", url).replace(
            "assets/examples/", f"{examples}/"
        )
        exec(compile(code, "docs/api.md", "exec"), {})
    return len(blocks)
