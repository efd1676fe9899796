"""Three sources for one loader: a folder, a shipped name, a Hugging Face Hub repo id (read
through the real huggingface_hub code from a cache laid out as the Hub lays it out, offline),
in a documented order; and push_to_hub up to the Hub client's upload call."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import ModelCard

import vqvae
from hub_helpers import COMMIT_A, fake_uploads, hub_cache, offline_hub
from prior_helpers import peaked_prior
from vqvae.prior import PRIOR_CONFIG, PRIOR_WEIGHTS, PriorConfig, load_prior

COMMIT_B = "b" * 40


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    offline_hub(monkeypatch, tmp_path / "empty-cache")


def tiny_pair(tiny_config, seed: int):
    """A tiny VQ-VAE and a prior paired with it, different for each seed."""
    torch.manual_seed(seed)
    model = vqvae.VQVAE(tiny_config).eval()
    config = PriorConfig.for_model(model, num_classes=2, d_model=16, n_layers=1, n_heads=2)
    return model, peaked_prior(config, seed=seed)


@pytest.fixture
def repo(tiny_config, tmp_path):
    """A Hub cache (tmp_path/cache) holding "org/tiny": a model and its prior at COMMIT_A
    (main), another pair at COMMIT_B (tag v2). Returns (cache, {commit: (model, prior)})."""
    cache = tmp_path / "cache"
    pairs = {}
    for commit, ref, seed in ((COMMIT_A, "main", 1), (COMMIT_B, "v2", 2)):
        model, prior = pairs[commit] = tiny_pair(tiny_config, seed)
        folder = tmp_path / f"upload-{seed}"
        model.save_pretrained(folder)
        prior.save_pretrained(folder)
        hub_cache(cache, "org/tiny", folder, commit, ref)
    return cache, pairs


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- the Hub, offline ----------------------------------------------------------------------
def test_repo_id_loads_model_and_prior_from_the_hub_cache(repo):
    cache, pairs = repo
    model = vqvae.VQVAE.from_pretrained("org/tiny", cache_dir=cache)
    prior = vqvae.load_prior("org/tiny", cache_dir=cache, model=model)  # the pairing holds
    assert not model.training and not prior.training
    assert same(model, pairs[COMMIT_A][0]) and same(prior, pairs[COMMIT_A][1])
    # the files are read where the Hub cache keeps them
    folder = vqvae.hub.resolve("org/tiny", (PRIOR_WEIGHTS,), cache_dir=cache)
    assert folder == cache / "models--org--tiny" / "snapshots" / COMMIT_A
    assert vqvae.load_pretrained("org/tiny", cache_dir=cache, local_files_only=True).config == (
        model.config
    )


def test_optional_files_are_asked_for_and_may_be_absent(repo, monkeypatch):
    cache, _ = repo
    asked = []
    real = huggingface_hub.snapshot_download

    def spy(repo_id, **kw):
        asked.append(kw["allow_patterns"])
        return real(repo_id, **kw)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    folder = vqvae.hub.resolve(
        "org/tiny", ("config.json",), optional=(PRIOR_CONFIG, "README.md"), cache_dir=cache
    )
    assert asked == [["config.json", PRIOR_CONFIG, "README.md"]]
    assert (folder / PRIOR_CONFIG).is_file() and not (folder / "README.md").exists()


def test_revision_picks_a_tag_or_a_commit(repo):
    cache, pairs = repo
    v2 = vqvae.VQVAE.from_pretrained("org/tiny", revision="v2", cache_dir=cache)
    assert same(v2, pairs[COMMIT_B][0]) and not same(v2, pairs[COMMIT_A][0])
    prior = vqvae.load_prior("org/tiny", revision=COMMIT_B, cache_dir=cache, model=v2)
    assert same(prior, pairs[COMMIT_B][1])
    with pytest.raises(ValueError, match="belongs to"):  # main's prior is not v2's
        vqvae.load_prior("org/tiny", cache_dir=cache, model=v2)
    with pytest.raises(FileNotFoundError, match=r"no model at 'org/tiny' \(revision 'v3'\)"):
        vqvae.VQVAE.from_pretrained("org/tiny", revision="v3", cache_dir=cache)


def test_cache_dir_is_honoured(repo, monkeypatch):
    cache, pairs = repo
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):  # the default cache
        vqvae.VQVAE.from_pretrained("org/tiny")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert same(vqvae.VQVAE.from_pretrained("org/tiny"), pairs[COMMIT_A][0])


def test_a_missing_repo_offline_is_a_clear_error(repo):
    cache, _ = repo
    with pytest.raises(FileNotFoundError) as e:
        vqvae.load_prior("org/nothing", cache_dir=cache)
    message = str(e.value)
    assert "no prior at 'org/nothing'" in message and "Hugging Face Hub" in message
    assert "available: cifar10, fashion-mnist, mnist" in message
    assert "HF_HUB_OFFLINE" in message  # huggingface_hub's own reason


def test_a_repo_without_a_prior_says_so(tiny_config, tmp_path):
    model, _ = tiny_pair(tiny_config, 1)
    model.save_pretrained(tmp_path / "only-model")
    hub_cache(tmp_path / "cache", "org/no-prior", tmp_path / "only-model", COMMIT_A)
    assert vqvae.VQVAE.from_pretrained("org/no-prior", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"repo 'org/no-prior': it has no prior"):
        load_prior("org/no-prior", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"the folder has no prior.safetensors.*train"):
        load_prior(tmp_path / "only-model")


@pytest.mark.slow
def test_hf_hub_offline_from_the_environment(repo, tmp_path):
    """A fresh interpreter, HF_HUB_OFFLINE=1 in its environment only: both load by repo id
    from the cache, and a repo not in it fails with the library's message."""
    cache, _ = repo
    code = (
        "import vqvae, sys\n"
        "m = vqvae.VQVAE.from_pretrained('org/tiny', cache_dir=sys.argv[1])\n"
        "p = vqvae.load_prior('org/tiny', cache_dir=sys.argv[1], model=m)\n"
        "try:\n"
        "    vqvae.VQVAE.from_pretrained('org/missing', cache_dir=sys.argv[1])\n"
        "except FileNotFoundError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "none")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "refused: no model at 'org/missing'" in out.stdout


# -- the order of the sources --------------------------------------------------------------
@pytest.fixture
def no_hub(monkeypatch):
    """Fail a test that asks the Hub."""

    def refuse(*args, **kwargs):
        raise AssertionError("this source must not be looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def test_a_local_folder_wins_over_a_shipped_name_and_a_repo_id(
    repo, tiny_config, tmp_path, monkeypatch, no_hub
):
    monkeypatch.chdir(tmp_path)
    local, _ = tiny_pair(tiny_config, 3)
    local.save_pretrained(tmp_path / "mnist")
    local.save_pretrained(tmp_path / "org" / "tiny")
    assert same(vqvae.VQVAE.from_pretrained("mnist"), local)
    assert same(vqvae.VQVAE.from_pretrained("org/tiny", cache_dir=repo[0]), local)


def test_a_folder_without_the_files_does_not_hide_a_shipped_model(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()  # a data folder, say
    assert vqvae.VQVAE.from_pretrained("mnist").config.name == "mnist"
    assert vqvae.load_prior("mnist").config.vqvae_name == "mnist"


def test_a_local_folder_without_the_files_is_never_looked_up_on_the_hub(
    tmp_path, monkeypatch, no_hub
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no model at 'runs/mine': the folder has no"):
        vqvae.VQVAE.from_pretrained("runs/mine")
    with pytest.raises(FileNotFoundError, match="no model at"):  # a path object is local
        vqvae.VQVAE.from_pretrained(Path("org/absent"))


def test_a_name_that_is_nothing_lists_the_shipped_models(no_hub):
    shipped = r"available: cifar10, cifar10-rvq, cifar10-rvq-small, fashion-mnist, mnist\)"
    with pytest.raises(FileNotFoundError, match=shipped):
        vqvae.VQVAE.from_pretrained("mnist-v9")
    with pytest.raises(FileNotFoundError, match="'org/name'"):
        vqvae.VQVAE.from_pretrained("a/b/c")
    with pytest.raises(TypeError, match="str or a path"):
        vqvae.VQVAE.from_pretrained(None)


# -- push_to_hub ---------------------------------------------------------------------------
@pytest.fixture
def hub_calls(monkeypatch, tmp_path):
    """Uploads stop at the Hub client; each uploaded folder is copied to calls["folder"]
    before it is removed, with upload_folder's arguments in calls["upload_folder"]."""
    calls: dict = {}

    def on_upload(repo_id, folder, kwargs):
        calls["upload_folder"] = (repo_id, kwargs)
        copy = tmp_path / "uploaded" / str(len(calls))
        calls["folder"] = Path(shutil.copytree(folder, copy))
        calls["create_repo"] = on_upload.create_repo

    fake_uploads(monkeypatch, on_upload)
    return calls


def test_push_to_hub_uploads_the_saved_files_and_a_card(hub_calls, tiny_config, tmp_path):
    model, prior = tiny_pair(tiny_config.replace(name="mnist"), 1)
    url = model.push_to_hub("org/digits", metrics={"psnr": 30.05, "ssim": 0.9846}, private=True)
    assert url.endswith(COMMIT_A)
    assert hub_calls["create_repo"] == ("org/digits", {"private": True, "exist_ok": True})
    folder = hub_calls["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "vqvae"
    assert {"vqvae", "vector-quantization"} <= set(card.data.tags)
    assert card.data.datasets == ["ylecun/mnist"]
    assert card.data.metrics == ["psnr", "ssim"]
    assert "| psnr | 30.05 |" in card.text and 'from_pretrained("org/digits")' in card.text
    # what went up loads again, through the Hub cache, as the same model
    hub_cache(tmp_path / "cache", "org/digits", folder, COMMIT_A)
    assert same(vqvae.VQVAE.from_pretrained("org/digits", cache_dir=tmp_path / "cache"), model)

    prior.push_to_hub("org/digits", dtype="float16", card="# My prior\n")
    folder = hub_calls["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", PRIOR_CONFIG, PRIOR_WEIGHTS]
    card = ModelCard.load(folder / "README.md")
    assert card.text.strip() == "# My prior" and card.data.datasets == ["ylecun/mnist"]
    assert "autoregressive-prior" in card.data.tags and card.data.metrics is None
    assert (folder / PRIOR_WEIGHTS).stat().st_size < 0.6 * prior_bytes(prior, tmp_path)


def prior_bytes(prior, tmp_path) -> int:
    prior.save_pretrained(tmp_path / "f32")
    return (tmp_path / "f32" / PRIOR_WEIGHTS).stat().st_size


def test_a_model_named_after_no_dataset_links_none(hub_calls, tiny_config, tmp_path):
    model, _ = tiny_pair(tiny_config, 1)  # named "tiny"
    model.push_to_hub("org/tiny", commit_message="first")
    assert hub_calls["upload_folder"] == ("org/tiny", {"commit_message": "first"})
    card = ModelCard.load(hub_calls["folder"] / "README.md")
    assert card.data.datasets is None and card.data.library_name == "vqvae"
