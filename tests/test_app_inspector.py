"""The code inspector, called through the handlers: a click on the input, the reconstruction
or the code map finds one cell, outlines it on all three, and says why it got its code (the
distances from its encoder output to the nearest codes, the chosen one first); the Codebook
tab shows the same panel; a model switch empties what follows the current image."""

from __future__ import annotations

import warnings

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import explorer
from app_helpers import fn_index
from explorer import settings
from explorer.tabs import codec, inspector
from vqvae import images

warnings.filterwarnings("ignore", message=".*outside of a gradio app.*")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A 61 x 30 colour picture: 8 x 16 cells of 4 px, the last column 1 px wide."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:30, 0:61] / 61
    a = np.stack([xx, yy, 1 - xx], -1) + rng.normal(0, 0.15, (30, 61, 3))
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


def click(x, y) -> gr.SelectData:
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def test_every_cell_keeps_its_code_first_and_its_true_distances(h, photo):
    out = h.reconstruct.image(photo, "cifar10", announce=False)
    c, grid = out.cells, out.grid.to_numpy()
    n = settings.INSPECT_NEAREST
    assert c.codes.shape == grid.shape == (8, 16) and c.near.shape == c.dist.shape == (8, 16, n)
    assert c.nbytes == grid.size * (2 + 4 * n), "small ints and half floats: bounded per cell"
    assert (c.near[..., 0] == grid).all(), "the chosen code first, the grid's own"
    assert (np.diff(c.dist.astype(np.float64), axis=-1) >= 0).all(), "then nearest first"
    # the distances are those of the encoder's output to the code vectors, as the quantizer
    # measures them: recompute them from the model
    m = h.models.get("cifar10")
    x = images.load_photo(photo, channels=3)[0]
    with torch.no_grad():
        _, z_e = m.model.encode_image(x, return_latents=True)
        all_d = torch.cdist(z_e[0].permute(1, 2, 0).reshape(-1, 8), m.model.codebook.float())
    all_d = all_d.view(8, 16, -1).numpy()
    assert (all_d.argmin(-1) == grid).all()
    want = np.take_along_axis(all_d, c.near.astype(np.int64), -1)
    np.testing.assert_allclose(c.dist.astype(np.float64), want, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(c.dist[..., 1], np.sort(all_d, -1)[..., 1], rtol=2e-3, atol=1e-3)


def test_a_cell_opens_the_inspector_with_why_it_got_its_code(h, photo):
    out = h.reconstruct.image(photo, "cifar10", announce=False)
    grid = out.grid.to_numpy()
    v = h.reconstruct.inspector.cell("cifar10", out.cells, 4, 11)
    k = int(grid[4, 11])
    assert v.why.startswith(f"### Cell (4, 11): code {k}\nPixels x 44-47, y 16-19.")
    rows = [r for r in v.why.splitlines() if r.startswith("| ")][1:]
    assert len(rows) == settings.INSPECT_NEAREST and rows[0].startswith(f"| **chosen** | {k} |")
    assert [int(r.split("|")[2]) for r in rows] == out.cells.near[4, 11].tolist()
    assert [c for _, c in v.candidates] == [f"#{j}" for j in out.cells.near[4, 11]]
    assert v.details.startswith(f"### Code {k}\nIn this image: **{(grid == k).sum()}** of its 128")
    assert v.image.size == (256, 256), "the code's tile (a decoded tile: no training patches)"
    assert len(v.neighbours) == 8 and "no `code_patches.npz`" in v.patches_note
    with pytest.raises(gr.Error, match="The row must be between 0 and 7"):
        h.reconstruct.inspector.cell("cifar10", out.cells, 8, 0)


def test_a_click_anywhere_finds_one_cell_and_outlines_it_on_every_picture(h, photo):
    cells = h.reconstruct.image(photo, "cifar10", announce=False).cells
    ins = h.reconstruct.inspector
    # a photo's pictures are at its own size: the input, the reconstruction and the code map
    # share pixels; the code map goes on to whole cells (61 -> 64 px)
    on_picture = ins.picture_click("cifar10", cells, click(45.7, 17.2))
    on_map = ins.code_map_click("cifar10", cells, click(45.7, 17.2))
    assert (
        on_picture.box
        == on_map.box
        == {
            "cell": [4, 11],
            "picture": {"box": [44, 16, 48, 20], "size": [61, 30]},
            "code_map": {"box": [44, 16, 48, 20], "size": [64, 32]},
        }
    )
    assert on_picture.why == on_map.why
    last = ins.code_map_click("cifar10", cells, click(62.5, 0))  # padding: still the last cell
    assert last.box["cell"] == [0, 15]
    assert last.box["picture"]["box"] == [60, 0, 61, 4], "clipped to the picture"
    assert last.box["code_map"]["box"] == [60, 0, 64, 4]
    with pytest.raises(gr.Error, match="Click a cell"):
        ins.picture_click("cifar10", cells, click(62.5, 0))  # outside the picture
    with pytest.raises(gr.Error, match="Click a cell"):
        ins.picture_click("cifar10", cells, click(float("nan"), 3))


def test_a_thumbnail_is_enlarged_and_so_are_its_boxes(h, plain_models):
    out = h.reconstruct.image(str(plain_models.examples / "mnist" / "02.png"), "mnist")
    assert out.original.size == out.code_map.size == (252, 252)  # 28 px x 9, 7 cells x 36
    v = h.reconstruct.inspector.picture_click("mnist", out.cells, click(100, 50))
    assert v.box == {
        "cell": [1, 2],
        "picture": {"box": [72, 36, 108, 72], "size": [252, 252]},
        "code_map": {"box": [72, 36, 108, 72], "size": [252, 252]},
    }
    assert v.why.startswith(f"### Cell (1, 2): code {out.grid.to_numpy()[1, 2]}\n")
    # a new image clears the inspector and gives the page the grid's geometry (the pointer's
    # outline): 7 x 7 cells of 36 picture px
    geometry = h.reconstruct.inspector.clear(out.cells).box["grid"]
    assert geometry == {"cells": [7, 7], "cell_px": 36, "picture": [252, 252],
                        "code_map": [252, 252]}  # fmt: skip


def test_the_inspector_needs_this_models_image(h, photo, plain_models):
    cells = h.reconstruct.image(photo, "cifar10", announce=False).cells
    for model, state in (("mnist", cells), ("cifar10", None), ("cifar10", {"codes": [[1]]})):
        with pytest.raises(gr.Error, match=f"Reconstruct an image with model '{model}' first"):
            h.reconstruct.inspector.cell(model, state, 0, 0)
    cleared = h.reconstruct.inspector.clear()
    assert cleared.box == {"cell": None} and cleared.details == inspector.HINT
    assert cleared.why == "" and cleared.image is None and cleared.candidates == []


def test_the_codebook_tab_shows_the_same_code_with_its_use_in_this_image(h, photo):
    out = h.reconstruct.image(photo, "cifar10", announce=False)
    k = int(out.grid.to_numpy()[4, 11])
    from_cell = h.reconstruct.inspector.cell("cifar10", out.cells, 4, 11)
    d = h.codebook.code("cifar10", k)  # as the API gives it: the training set only
    assert d.neighbours == from_cell.neighbours
    assert np.array_equal(np.asarray(d.image), np.asarray(from_cell.image))
    assert "In this image" not in d.details
    # the page adds the usage in its current image
    assert h.codebook.code_in_image("cifar10", k, out.cells) == from_cell.details
    for model, cells in (("mnist", out.cells), ("cifar10", None)):  # another model's, none
        assert h.codebook.code_in_image(model, k, cells) == gr.skip()


def test_code_tiles_show_the_mean_training_crop_where_there_is_one(prior_models, tmp_path):
    h = explorer.Handlers(prior_models.models, prior_models.examples, tmp_path)
    m = h.models.get("mnist")  # with code patches
    h.codebook.atlas("mnist")
    seen = np.flatnonzero(m.seen)
    k = int(seen[0])
    tile = np.asarray(h.codebook.code("mnist", k).image.convert("L"))
    crop = m.means.shape[-1]  # the code's cell and one cell around it
    scale = settings.DISPLAY // crop
    assert tile.shape == (crop * scale,) * 2
    mean = images.to_uint8(m.means[k])
    # nearest-neighbour enlarged, outside the outlined cell in the middle
    assert (tile[::scale, ::scale][0] == mean[0]).all() and (tile[::scale, 0] == mean[:, 0]).all()
    never = [j for j in range(len(m.seen)) if not m.seen[j]]
    if never:  # a code never picked: what it decodes to alone
        tile = h.codebook.code("mnist", never[0]).image
        assert np.array_equal(np.asarray(tile), np.asarray(images.enlarge(m.atlas[never[0]], 256)))


# -- model switching -----------------------------------------------------------------------------


def test_a_model_switch_empties_what_follows_the_image_and_reconstructs_at_once(
    plain_models, tmp_path
):
    demo, h = explorer.build_app(plain_models.models, plain_models.examples, tmp_path)
    fns = demo.fns
    clear = fns[fn_index(demo, "switch_clear")]
    first = fns[fn_index(demo, "first_example")]
    select = fns[fn_index(demo, "select_model")]
    # started by the switch itself, not after select_model: its outputs show they are loading
    assert first.targets == select.targets == clear.targets
    panel_fields = (
        len(codec.Compressed._fields) + len(codec.Decompressed._fields)
        + len(inspector.CellView._fields)
    )  # fmt: skip
    assert len(clear.outputs) == panel_fields
    values = clear.fn()
    assert len(values) == panel_fields
    assert all(v is None for v in values[: panel_fields - len(inspector.CellView._fields)])
    assert values[-len(inspector.CellView._fields) :] == h.reconstruct.inspector.clear()
    # the example's outputs are every output of the Reconstruct tab's result panel
    names = {getattr(b, "elem_id", None) for b in first.outputs}
    assert {"input-image", "orig", "recon", "codemap", "psnr", "used"} <= names


def test_a_loaded_model_is_served_without_listing_the_models_folder(h, monkeypatch):
    h.models.get("mnist")

    def listing():
        raise AssertionError("the models folder was listed")

    monkeypatch.setattr(h.models, "names", listing)
    assert h.models.get("mnist").name == "mnist"
    assert h.reconstruct.example("mnist").cells.model == "mnist"
