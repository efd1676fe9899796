"""save_pretrained / load_pretrained: identical outputs, safetensors + JSON, no pickle,
clear errors."""

import json
import pickle
import re
import resource
import time

import pytest
import torch

import vqvae
import vqvae.checkpoint


@pytest.fixture
def trained(tiny_config, mnist_small):
    """A tiny model whose EMA state and buffers have moved away from the init."""
    model = vqvae.VQVAE(tiny_config).train()
    for i in range(3):
        model(mnist_small.train[i * 16 : (i + 1) * 16])
    return model.eval()


def test_round_trip_gives_identical_outputs(trained, tmp_path, mnist_small):
    trained.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = vqvae.load_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config == trained.config
    x = mnist_small.test[:8]
    a, b = trained(x), loaded(x)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.indices, b.indices)
    before, after = trained.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # EMA buffers too


def test_float16_file_is_half_the_size_and_loads_as_float32(trained, tmp_path, mnist_small):
    trained.save_pretrained(tmp_path / "f32")
    trained.save_pretrained(tmp_path / "f16", dtype="float16")
    size = {k: (tmp_path / k / "model.safetensors").stat().st_size for k in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]
    stored = vqvae.checkpoint.load_file(str(tmp_path / "f16" / "model.safetensors"))
    params = {name for name, _ in trained.named_parameters()}
    assert all(stored[k].dtype == torch.float16 for k in params)
    assert stored["quantizer.ema_cluster_size"].dtype == torch.float32  # training state kept
    loaded = vqvae.load_pretrained(tmp_path / "f16")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, p in loaded.named_parameters():
        assert torch.equal(p, trained.get_parameter(name).half().float()), name
    x = mnist_small.test[:8]
    err = (loaded(x).reconstruction - trained(x).reconstruction).abs().max()
    assert err < 0.02


def test_unknown_weights_dtype_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match="float16"):
        trained.save_pretrained(tmp_path / "m", dtype="int8")
    assert not (tmp_path / "m").exists()


def test_loading_never_unpickles(trained, tmp_path, monkeypatch):
    trained.save_pretrained(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    for target, name in (
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
    ):
        monkeypatch.setattr(target, name, refuse)
    loaded = vqvae.load_pretrained(str(tmp_path / "m"))
    assert torch.equal(loaded.codebook, trained.codebook)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_weights_give_a_clear_error(trained, tmp_path, damage):
    trained.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {
            "garbage": b"not a safetensors file at all" * 10,
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        vqvae.load_pretrained(tmp_path / "m")


def test_bad_config_gives_a_clear_error(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"codebook_size": 32, "colour": "blue"}')
    with pytest.raises(ValueError, match=r"config.json is not a valid VQ-VAE config.*colour"):
        vqvae.load_pretrained(tmp_path / "m")


def test_config_that_disagrees_with_the_weights_gives_a_clear_error(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    bigger = vqvae.VQVAEConfig(
        **{**vars(trained.config), "codebook_size": trained.config.codebook_size * 2}
    )
    bigger.to_json(tmp_path / "m" / "config.json")
    with pytest.raises(
        ValueError, match=r"weights in .*model.safetensors do not match .*config.json"
    ):
        vqvae.load_pretrained(tmp_path / "m")


def test_missing_model_lists_the_options(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(vqvae.checkpoint, "PRETRAINED_DIR", tmp_path / "shipped")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no model at 'nope'.*available: none"):
        vqvae.load_pretrained("nope")
    trained.save_pretrained(tmp_path / "shipped" / "digits")
    trained.save_pretrained(tmp_path / "shipped" / "other")
    with pytest.raises(FileNotFoundError, match=r"model.safetensors.*available: digits, other"):
        vqvae.load_pretrained(tmp_path / "missing-folder")


def test_bare_name_resolves_to_the_pretrained_folder(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(vqvae.checkpoint, "PRETRAINED_DIR", tmp_path / "shipped")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    trained.save_pretrained(tmp_path / "shipped" / "digits")
    assert vqvae.resolve_pretrained("digits") == tmp_path / "shipped" / "digits"
    loaded = vqvae.load_pretrained("digits")
    assert torch.equal(loaded.codebook, trained.codebook)


def test_save_overwrites_and_leaves_no_temporary_files(trained, tiny_config, tmp_path):
    other = vqvae.VQVAE(tiny_config.replace(codebook_size=16))
    other.save_pretrained(tmp_path / "m")
    trained.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert vqvae.load_pretrained(tmp_path / "m").config.codebook_size == 32


# -- format_version -------------------------------------------------------------------------
def test_config_json_carries_the_format_version(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    assert stored["format_version"] == vqvae.config.FORMAT_VERSION == 1
    for name in ("mnist", "fashion-mnist", "cifar10"):  # the shipped models carry it too
        shipped = json.loads((vqvae.checkpoint.PRETRAINED_DIR / name / "config.json").read_text())
        assert shipped["format_version"] == 1, name


def test_config_without_format_version_reads_as_version_1(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    old = json.loads(path.read_text())
    del old["format_version"]  # as written before the field existed
    path.write_text(json.dumps(old))
    loaded = vqvae.load_pretrained(tmp_path / "m")
    assert loaded.config == trained.config
    assert torch.equal(loaded.codebook, trained.codebook)


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_unknown_format_version_gives_a_clear_error(trained, tmp_path, version):
    trained.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": version}))
    with pytest.raises(ValueError, match=re.escape(str(path))) as e:
        vqvae.VQVAE.from_pretrained(tmp_path / "m")
    assert f"format_version {version!r}" in str(e.value) or f"got {version!r}" in str(e.value)


def test_class_methods_and_aliases_are_one_thing(trained, tmp_path):
    vqvae.save_pretrained(trained, tmp_path / "a", dtype="float16")
    trained.save_pretrained(tmp_path / "b", dtype="float16")
    fa = vqvae.checkpoint.load_file(str(tmp_path / "a" / "model.safetensors"))
    fb = vqvae.checkpoint.load_file(str(tmp_path / "b" / "model.safetensors"))
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert fa["quantizer.embedding"].dtype == torch.float16
    a = vqvae.load_pretrained(tmp_path / "a")
    b = vqvae.VQVAE.from_pretrained(tmp_path / "b", device="cpu")
    assert type(a) is type(b) is vqvae.VQVAE and not b.training
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_module_knows_nothing_of_the_model():
    # no import circle: the file layer imports neither the model nor the config
    import ast

    tree = ast.parse(open(vqvae.checkpoint.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "files" in imported  # the check sees relative imports
    assert not imported & {"model", "config", "quantizer", "vqvae", "vqvae.model", "vqvae.config"}


# -- crafted config.json --------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_channels", -1),
        ("image_size", -4),
        ("image_size", 0),
        ("codebook_size", 512.0),
        ("codebook_size", True),
        ("embedding_dim", "8"),
        ("res_layers", -1),
        ("downsample", 3),
        ("beta", float("nan")),
        ("ema_decay", 1.0),
        ("ema_eps", 0),
        ("use_ema", 1),
        ("dead_code_threshold", 2.5),
        ("name", None),
    ],
)
def test_crafted_config_gives_the_loaders_value_error(trained, tmp_path, field, value):
    trained.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(ValueError, match=rf"config.json is not a valid VQ-VAE config: {field}"):
        vqvae.load_pretrained(tmp_path / "m")


def test_config_asking_for_a_huge_codebook_fails_before_allocating(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    # 2**24 codes of 8 floats: the codebook and its EMA sums would take 1 GiB
    path.write_text(json.dumps({**json.loads(path.read_text()), "codebook_size": 2**24}))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"quantizer.embedding is \(32, 8\) in the file"):
        vqvae.load_pretrained(tmp_path / "m")
    assert time.perf_counter() - t0 < 0.5
    # the process's peak memory did not grow by anything near the 1 GiB a build would take
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 200 * 1024


def test_wider_network_in_config_names_the_mismatching_tensors(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    trained.config.replace(hidden_channels=24).to_json(tmp_path / "m" / "config.json")
    with pytest.raises(ValueError, match=r"do not match .*net\.0\.weight is \(8, 1, 4, 4\)"):
        vqvae.load_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    "field, value",
    [("res_layers", 100_000), ("hidden_channels", 10**6), ("in_channels", 1000),
     ("codebook_size", 2**30), ("embedding_dim", 10**5)],
)  # fmt: skip
def test_config_beyond_the_size_bounds_is_refused_by_its_numbers(trained, tmp_path, field, value):
    trained.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"VQ-VAE config: {field} must be in \[\d+, \d+\]"):
        vqvae.load_pretrained(tmp_path / "m")
    assert time.perf_counter() - t0 < 0.5
