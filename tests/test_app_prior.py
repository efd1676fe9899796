"""The app's prior features on a tiny VQ-VAE with a tiny class-conditional prior: the Sample
tab, resampling marked cells, the surprise overlay, training patches in the code inspector
(written by train.export), a model without a prior, and /sample and /resample through
gradio_client against a real server."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError
from PIL import Image

import explorer
import vqvae
from app_helpers import CLASS_NAMES
from explorer import settings
from explorer.tabs.edit import Edited
from explorer.tabs.sample import Samples
from train.export import main as export_main
from vqvae import images
from vqvae.viz import CODE_PATCHES, load_code_patches, mean_patches


@pytest.fixture(scope="module")
def h(prior_models, tmp_path_factory):
    return explorer.Handlers(
        prior_models.models, prior_models.examples, cache_dir=tmp_path_factory.mktemp("cache")
    )


def grid_of(h, name="mnist", i=0) -> np.ndarray:
    m = h.models.get(name)
    return np.array(h.reconstruct.image(m.examples[i], name, "thumbnail").grid)


def pixel(cell, size=7):
    """The centre of code map cell (i, j) in pixels (x, y)."""
    step = images.code_map_cell_size((size, size), settings.DISPLAY)
    return ((cell[1] + 0.5) * step, (cell[0] + 0.5) * step)


# ----------------------------------------------------------------------------- sample
def test_sample_decodes_reproducible_grids(h):
    m = h.models.get("mnist")
    s = h.sample.draw("mnist", "three", 5, 1.0, 0, 1.0, 7)
    codes = np.array(s.codes)
    assert codes.shape == (5, 7, 7) and codes.min() >= 0 and codes.max() < 32
    assert len(s.gallery) == 5 and "5 samples" in s.note and "three" in s.note
    with torch.inference_mode():
        expect = images.to_uint8(m.model.decode(torch.from_numpy(codes)))
    np.testing.assert_array_equal(np.stack([im for im, _ in s.gallery]), expect)
    assert (np.array(h.sample.draw("mnist", "three", 5, 1.0, 0, 1.0, 7).codes) == codes).all()
    assert (np.array(h.sample.draw("mnist", "three", 5, 1.0, 0, 1.0, 8).codes) != codes).any()
    # the class is passed on: it changes what is drawn from the same seed
    assert (np.array(h.sample.draw("mnist", "seven", 5, 1.0, 0, 1.0, 7).codes) != codes).any()


def test_each_draw_has_a_new_seed_that_the_note_names_and_that_draws_it_again(h):
    import re

    first, second = h.sample.draw("mnist", n=4), h.sample.draw("mnist", n=4)
    assert first.codes != second.codes, "a new seed each call"
    seed = int(re.search(r"seed \*\*(\d+)\*\*", first.note).group(1))
    again = h.sample.draw("mnist", n=4, seed=seed)
    assert again.codes == first.codes and f"seed **{seed}**" in again.note


def test_top_k_one_draws_the_same_grid_every_time(h):
    codes = np.array(h.sample.draw("mnist", "any", 4, 1.0, 1, 1.0, -1).codes)
    assert (codes == codes[0]).all()


def test_sample_setup_lists_the_classes(h):
    s = h.sample.setup("mnist")
    assert s.label["choices"] == ["any", *CLASS_NAMES] and s.label["value"] == "any"
    assert s.top_k["maximum"] == 32 and "10 classes" in s.note


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(temperature=0), "Temperature must be above 0"),
        (dict(temperature=-1), "Temperature must be above 0"),
        (dict(temperature="hot"), "must be numbers"),
        (dict(top_k=33), "Top-k"),
        (dict(top_k=-2), "Top-k"),
        (dict(n=0), "number of samples must be between 1 and 64"),
        (dict(n=65), "number of samples must be between 1 and 64"),
        (dict(n=2.5), "whole number"),
        (dict(label="eleven"), "Unknown class 'eleven'"),
        (dict(guidance=float("nan")), "Guidance"),
        (dict(seed=2**40), "seed"),
    ],
)
def test_sample_bad_inputs(h, kw, words):
    args = dict(label="any", n=4, temperature=1.0, top_k=0, guidance=1.0, seed=0) | kw
    with pytest.raises(gr.Error, match=words):
        h.sample.draw("mnist", **args)


def test_sample_pick_gives_the_grid(h):
    codes = h.sample.draw("mnist", "any", 3, 1.0, 0, 1.0, 0).codes
    picked = h.sample.pick("mnist", codes, SimpleNamespace(index=2))
    assert (np.array(picked) == np.array(codes[2])).all()
    with pytest.raises(gr.Error, match="index of the sample must be between 0 and 2"):
        h.sample.pick("mnist", codes, SimpleNamespace(index=3))
    with pytest.raises(gr.Error, match="sample first"):
        h.sample.pick("mnist", None, SimpleNamespace(index=0))


# ----------------------------------------------------------------------------- no prior
def test_a_model_without_prior_stays_usable(h):
    s = h.sample.setup("cifar10")
    assert "no prior" in s.note and s.label["choices"] == ["any"]
    with pytest.raises(gr.Error, match="no prior"):
        h.sample.draw("cifar10", "any", 4, 1.0, 0, 1.0, 0)
    grid = grid_of(h, "cifar10")
    with pytest.raises(gr.Error, match="no prior"):
        h.edit.resample("cifar10", grid, np.ones((8, 8), int), "any", 1.0, 0, 1.0, 0)
    view = h.edit.code_map_view("cifar10", grid, None, True)
    assert "no prior" in view.bits and view.code_map.size == (256, 256)
    assert h.edit.decode("cifar10", grid).image is not None  # the rest of the app works


# ----------------------------------------------------------------------------- resample
def test_resample_keeps_the_unmarked_cells(h):
    grid = grid_of(h)
    marks = np.zeros((7, 7), int)
    marks[4:, 2:] = 1
    e = h.edit.resample("mnist", grid, marks.tolist(), "two", 1.0, 0, 1.0, 3)
    new = np.array(e.grid)
    np.testing.assert_array_equal(new[marks == 0], grid[marks == 0])
    assert (new[marks == 1] != grid[marks == 1]).any()
    assert np.array_equal(np.load(e.npy), new) and Image.open(e.png).size == (28, 28)
    again = h.edit.resample("mnist", grid, {"data": marks.tolist()}, "two", 1.0, 0, 1.0, 3)
    np.testing.assert_array_equal(np.array(again.grid), new)  # the seed makes it reproducible


@pytest.mark.parametrize(
    "marks, words",
    [
        (np.zeros((7, 7), int), "No cells are marked"),
        (None, "No cells are marked"),
        (np.ones((6, 7), int), "marks must be 7x7"),
        (np.full((7, 7), 2), "0 \\(kept\\) or 1"),
        ([["a"] * 7] * 7, "table of 0 and 1"),
    ],
)
def test_resample_bad_marks(h, marks, words):
    m = marks.tolist() if isinstance(marks, np.ndarray) else marks
    with pytest.raises(gr.Error, match=words):
        h.edit.resample("mnist", grid_of(h), m, "any", 1.0, 0, 1.0, 0)


def test_marks_are_toggled_by_clicks_in_mark_mode(h):
    grid = grid_of(h)
    marks = np.array(h.edit.toggle_mark("mnist", grid, None, SimpleNamespace(index=pixel((2, 3)))))
    assert marks.sum() == 1 and marks[2, 3] == 1
    view = h.edit.code_map_view("mnist", grid, marks, False)
    plain = h.edit.code_map_view("mnist", grid, None, False)
    diff = np.asarray(view.code_map) != np.asarray(plain.code_map)
    cell = images.code_map_cell_size((7, 7), settings.DISPLAY)
    ys, xs = np.nonzero(diff.any(-1))
    assert (ys // cell == 2).all() and (xs // cell == 3).all()  # only the marked cell veiled
    again = h.edit.toggle_mark("mnist", grid, marks, SimpleNamespace(index=pixel((2, 3))))
    assert np.array(again).sum() == 0
    with pytest.raises(gr.Error, match="outside"):
        h.edit.toggle_mark("mnist", grid, marks, SimpleNamespace(index=[-5, 3]))
    assert (
        np.array(h.edit.mark_all("mnist")).sum() == 49
        and np.array(h.edit.clear_marks("mnist")).sum() == 0
    )


# ----------------------------------------------------------------------------- surprise
def test_surprise_is_the_prior_bits(h):
    m = h.models.get("mnist")
    grid = grid_of(h)
    s = h.edit.surprise("mnist", grid)
    expect = m.prior.code_bits(torch.from_numpy(grid)[None])[0].numpy()
    np.testing.assert_allclose(np.array(s.bits, dtype=float), expect, atol=0.01)
    assert s.total == pytest.approx(float(m.prior.nll_bits(torch.from_numpy(grid)[None])), abs=0.1)
    assert s.plain == 245.0  # 7 * 7 * log2 32
    view = h.edit.code_map_view("mnist", grid, None, True)
    assert f"{s.total:.1f} bits" in view.bits and "245 bits" in view.bits
    assert np.array_equal(np.asarray(view.code_map), np.asarray(s.image))
    # a more surprising cell is drawn darker
    bits = np.array(s.bits, dtype=float)
    lo, hi = (
        np.unravel_index(bits.argmin(), bits.shape),
        np.unravel_index(bits.argmax(), bits.shape),
    )
    shade = np.asarray(s.image.convert("L"), dtype=float)
    cell = images.code_map_cell_size((7, 7), settings.DISPLAY)
    corner = {c: shade[c[0] * cell + 2, c[1] * cell + 2] for c in (lo, hi)}  # no text there
    assert corner[hi] < corner[lo]
    with pytest.raises(gr.Error, match="7x7"):
        h.edit.surprise("mnist", np.zeros((3, 3), int))


# ----------------------------------------------------------------------------- patches
def test_export_writes_patches_of_where_each_code_was_picked(prior_models, mnist_dir):
    models = prior_models.models
    path = models / "mnist" / CODE_PATCHES
    assert 0 < path.stat().st_size < 1_000_000
    data = load_code_patches(path, 32)
    model = vqvae.load_pretrained(models / "mnist")
    train = np.load(Path(__file__).parent / "data" / "mnist_small.npz")["train_images"]
    off = data["offsets"]
    per_code = np.diff(off)
    assert per_code.max() == 32 and data["patches"].shape[1:] == (1, 12, 12)
    codes = model.encode(torch.from_numpy(train).float() / 255.0).numpy()
    counts = np.bincount(codes.ravel(), minlength=32)
    np.testing.assert_array_equal(per_code, np.minimum(counts, 32))
    for k in np.flatnonzero(per_code)[:5]:
        for t in range(off[k], off[k + 1], 7):
            n, (i, j) = data["image_index"][t], data["cell_yx"][t]
            assert codes[n, i, j] == k  # the encoder picked k there
            centre = data["patches"][t, 0, 4:8, 4:8]
            np.testing.assert_array_equal(centre, train[n, 0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4])
    # the command line, for a folder that already exists
    path.unlink()
    export_main(["--patches-only", str(models / "mnist"), "--data-dir", str(mnist_dir)])
    assert load_code_patches(path, 32)["offsets"][-1] == off[-1]


def test_code_inspector_shows_the_patches(h, prior_models):
    data = load_code_patches(prior_models.models / "mnist" / CODE_PATCHES, 32)
    n = np.diff(data["offsets"])
    used, unused = int(n.argmax()), np.flatnonzero(n == 0)
    shown = h.codebook.code_patches("mnist", used)
    assert f"{n[used]} training crops" in shown.note
    rows = -(-n[used] // 8)
    assert shown.image.size == ((8 * 14 + 2) * 4, (rows * 14 + 2) * 4)
    if len(unused):
        assert h.codebook.code_patches("mnist", int(unused[0])).image is None
    none = h.codebook.code_patches("cifar10", 0)
    assert none.image is None and "--patches-only" in none.note


def test_mean_patches_are_the_mean_of_each_codes_crops(prior_models):
    data = load_code_patches(prior_models.models / "mnist" / CODE_PATCHES, 32)
    means, seen = mean_patches(data)
    off = data["offsets"]
    for k in range(32):
        crops = data["patches"][off[k] : off[k + 1]].astype(np.float64) / 255.0
        assert bool(seen[k]) == (len(crops) > 0)
        want = crops.mean(0) if len(crops) else np.zeros(crops.shape[1:])
        np.testing.assert_allclose(means[k].numpy(), want, atol=1e-6)


def test_the_atlas_shows_each_code_in_its_training_context(h, prior_models):
    """With training patches, an atlas tile is the code's mean crop (its cell outlined);
    a code never picked shows what it decodes to alone."""
    data = load_code_patches(prior_models.models / "mnist" / CODE_PATCHES, 32)
    means, seen = mean_patches(data)
    tiles = dict((int(c.lstrip("#")), f) for f, c in h.codebook.atlas("mnist"))
    used = int(np.flatnonzero(seen.numpy())[0])
    tile = np.asarray(Image.open(tiles[used]).convert("L"), np.float64)
    scale = tile.shape[0] // means.shape[-1]
    assert tile.shape == (96, 96) and scale == 8
    want = np.asarray(images.enlarge(means[used], 96), np.float64)
    assert np.abs(tile[:16] - want[:16]).max() <= 1, "the context around the cell, as averaged"
    assert not np.array_equal(tile, want), "its cell is outlined"
    for k in np.flatnonzero(~seen.numpy())[:2]:
        decoded = images.enlarge(h.models.get("mnist").atlas[int(k)], 96)
        assert np.array_equal(np.asarray(Image.open(tiles[int(k)])), np.asarray(decoded))


# ----------------------------------------------------------------------------- the API
def test_sample_and_resample_through_the_api(live_app):
    s = Samples(*live_app.client.predict("mnist", "four", 6, 1.0, 0, 1.0, 11, api_name="/sample"))
    assert len(s.gallery) == 6 and Image.open(s.gallery[0]["image"]).size == (28, 28)
    codes = np.array(s.codes)
    assert codes.shape == (6, 7, 7) and "6 samples" in s.note
    grid = {"headers": [str(j) for j in range(7)], "data": codes[0].tolist()}
    marks = np.zeros((7, 7), int)
    marks[0] = 1
    e = Edited(*live_app.client.predict(
        "mnist", grid, {"headers": grid["headers"], "data": marks.tolist()}, "any", 1.0,
        api_name="/resample",
    ))  # fmt: skip
    new = np.array(e.grid["data"])
    np.testing.assert_array_equal(new[1:], codes[0][1:])
    assert Image.open(e.png).size == (28, 28) and np.array_equal(np.load(e.npy), new)


ONE = {"headers": ["0"], "data": [[1]]}


def table7(value: int) -> dict:
    return {"headers": [str(j) for j in range(7)], "data": [[value] * 7 for _ in range(7)]}


@pytest.mark.parametrize(
    "api, args, words",
    [
        # the slider's own check (Gradio's message), then the handler's
        ("/sample", ("mnist", "any", 4, 0.0, 0, 1.0, 0), "less than minimum value 0.1"),
        ("/sample", ("mnist", "any", 4, 1.0, 99, 1.0, 0), "Top-k"),
        ("/sample", ("mnist", "any", 100, 1.0, 0, 1.0, 0), "maximum value 64"),
        ("/sample", ("mnist", "ten", 4, 1.0, 0, 1.0, 0), "Unknown class"),
        ("/sample", ("cifar10", "any", 4, 1.0, 0, 1.0, 0), "no prior"),
        ("/resample", ("mnist", ONE, ONE, "any", 1.0), "code grid must be 7x7"),
        ("/resample", ("mnist", table7(3), ONE, "any", 1.0), "marks must be 7x7"),
        ("/resample", ("mnist", table7(3), table7(0), "any", 1.0), "No cells are marked"),
        ("/resample", ("mnist", table7(3), table7(1), "ten", 1.0), "Unknown class"),
    ],
)
def test_api_bad_inputs_are_clear_errors(live_app, api, args, words):
    with pytest.raises(AppError, match=words):
        live_app.client.predict(*args, api_name=api)
    one = Samples(*live_app.client.predict("mnist", "any", 1, 1.0, 0, 1.0, 0, api_name="/sample"))
    assert len(one.gallery) == 1
