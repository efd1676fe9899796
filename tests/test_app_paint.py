"""Photos at full resolution in the app's Edit codes and Interpolate tabs: the brush and the
rectangle on a photo's code map, each re-decoded around the change and pasted into the last
picture (equal to a full decode), marked cells resampled with the model's grid prior, and the
interpolation of two photos of different sizes."""

from __future__ import annotations

import json
import warnings

import gradio as gr
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

import explorer
import vqvae
from app_helpers import gif_ms
from explorer.settings import EDIT_MAP
from explorer.tabs import paint
from vqvae import grid, images

skimage_data = pytest.importorskip("skimage.data")
warnings.filterwarnings("ignore", message=".*outside of a gradio app.*")


@pytest.fixture(scope="module")
def h(plain_models, tmp_path_factory):
    return explorer.Handlers(
        plain_models.models, plain_models.examples, cache_dir=tmp_path_factory.mktemp("cache")
    )


def save_photo(path, name: str, rows: slice, cols: slice) -> str:
    Image.fromarray(getattr(skimage_data, name)()[rows, cols]).save(path)
    return str(path)


@pytest.fixture(scope="module")
def photo_grid(h, tmp_path_factory):
    """A 96 x 128 crop of the astronaut, reconstructed at its own size: a 24 x 32 grid."""
    path = save_photo(
        tmp_path_factory.mktemp("photo") / "a.png", "astronaut", slice(40, 136), slice(180, 308)
    )
    return h.reconstruct.image(path, "cifar10", announce=False).grid


def click(cell, shape) -> gr.SelectData:
    """A click at the centre of ``cell`` (row, column) of a photo's code map."""
    px = images.code_map_cell_size(shape, EDIT_MAP)
    index = [cell[1] * px + px // 2, cell[0] * px + px // 2]
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def full_decode(h, codes: np.ndarray) -> torch.Tensor:
    m = h.models.get("cifar10").model
    return m.decode_codes(torch.from_numpy(codes)[None])


def test_a_photo_grid_opens_on_its_own_map_with_the_thumbnail_tools_hidden(h, photo_grid):
    s = h.edit.reset("cifar10", photo_grid)
    assert s.canvas.codes.shape == (24, 32) and (s.canvas.codes == photo_grid.to_numpy()).all()
    assert Image.open(s.image).size == (128, 96), "the decoded picture at the photo's size"
    assert s.photo_map.size == (EDIT_MAP, EDIT_MAP * 24 // 32)
    assert s.thumb_maps["visible"] is False and s.photo_tools["visible"] is True
    assert "32x24 grid" in s.note
    assert "Resample" in paint.NOTE and "grid prior" in paint.NOTE, "the page says what it needs"
    assert "Plain: **3,840 bits**" in h.edit.code_map_view("cifar10", None, canvas=s.canvas).bits
    thumb = h.edit.reset("cifar10", np.zeros((8, 8), int))  # the thumbnail grid: as before
    assert thumb.canvas is None and thumb.thumb_maps["visible"] is True
    assert thumb.photo_tools["visible"] is False and thumb.grid.shape == (8, 8)


def test_brush_paints_a_disc_of_cells_and_the_patch_equals_a_full_decode(h, photo_grid):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    before = canvas.codes.copy()
    code = int((before[10, 12] + 1) % 32)
    out = h.edit.paint_photo("cifar10", canvas, code, "brush", 2, click((10, 12), (24, 32)))
    painted = out.canvas.codes != before
    i, j = np.nonzero(out.canvas.codes == code)
    disc = (np.arange(24)[:, None] - 10) ** 2 + (np.arange(32)[None] - 12) ** 2 <= 2.5**2
    assert (out.canvas.codes[disc] == code).all() and (
        out.canvas.codes[~disc] == before[~disc]
    ).all()
    assert painted.sum() > 10 and "re-decoded" in out.note
    assert (np.load(out.npy) == out.canvas.codes).all()
    # the picture patched around the stroke equals the whole new grid decoded again
    torch.testing.assert_close(
        out.canvas.picture, full_decode(h, out.canvas.codes), atol=1e-5, rtol=0
    )
    assert (out.canvas.picture - canvas.picture).abs().max() > 1e-3, "the picture changed"
    shown = np.asarray(Image.open(out.image), float)
    assert np.abs(shown - images.to_uint8(out.canvas.picture[0])).max() == 0
    assert (canvas.codes == before).all(), "the old canvas is left as it was"
    # a second stroke on the patched picture stays equal to a full decode
    again = h.edit.paint_photo("cifar10", out.canvas, 3, "brush", 0, click((23, 31), (24, 32)))
    assert again.canvas.codes[23, 31] == 3
    assert (again.canvas.codes != out.canvas.codes).sum() <= 1
    full = full_decode(h, again.canvas.codes)
    torch.testing.assert_close(again.canvas.picture, full, atol=1e-5, rtol=0)


def test_rectangle_fills_between_two_corner_clicks(h, photo_grid):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    first = h.edit.paint_photo("cifar10", canvas, 5, "rectangle", 0, click((20, 3), (24, 32)))
    assert first.canvas.corner == (20, 3) and (first.canvas.codes == canvas.codes).all()
    assert "opposite corner" in first.note
    second = h.edit.paint_photo(
        "cifar10", first.canvas, 5, "rectangle", 0, click((14, 9), (24, 32))
    )
    expect = canvas.codes.copy()
    expect[14:21, 3:10] = 5
    assert (second.canvas.codes == expect).all() and second.canvas.corner is None
    full = full_decode(h, expect)
    torch.testing.assert_close(second.canvas.picture, full, atol=1e-5, rtol=0)
    filled = h.edit.fill("cifar10", None, 7, second.canvas)
    assert (filled.canvas.codes == 7).all() and filled.photo_tools["visible"] is True
    back = h.edit.reset("cifar10", photo_grid)
    assert (back.canvas.codes == photo_grid.to_numpy()).all()


def path(*cells, shape=(24, 32)) -> str:
    """A drag's path as the page sends it: the centres of ``cells`` in map pixels, as JSON."""
    px = images.code_map_cell_size(shape, EDIT_MAP)
    return json.dumps([[c * px + px / 2, r * px + px / 2] for r, c in cells])


def test_a_dragged_brush_paints_every_cell_along_its_path(h, photo_grid):
    """Two points 17 cells apart (a fast drag): the cells between them are painted too,
    with the brush's radius around each; the patch equals a full decode."""
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    out = h.edit.drag_photo("cifar10", canvas, 7, "brush", 1, path((5, 3), (5, 20)))
    expect = canvas.codes.copy()
    expect[4:7, 2:22] = 7  # radius 1: the 3 x 3 block around each cell of row 5, cols 3..20
    assert (out.canvas.codes == expect).all()
    assert "dragged" in out.note and "60 cells" in out.note
    full = full_decode(h, expect)
    torch.testing.assert_close(out.canvas.picture, full, atol=1e-5, rtol=0)
    # a diagonal drag with radius 0 leaves no gap between its points' cells
    diag = h.edit.drag_photo("cifar10", canvas, 7, "brush", 0, path((0, 0), (10, 10)))
    changed = diag.canvas.codes == 7
    assert all(changed[i, i] for i in range(11))


def test_a_dragged_rectangle_spans_the_first_and_last_points(h, photo_grid):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    out = h.edit.drag_photo(
        "cifar10", canvas, 5, "rectangle", 0, path((20, 3), (2, 30), (17, 20), (14, 9))
    )
    expect = canvas.codes.copy()
    expect[14:21, 3:10] = 5
    assert (out.canvas.codes == expect).all() and out.canvas.corner is None
    marked = h.edit.drag_photo("cifar10", canvas, 0, "mark", 0, path((1, 1), (3, 4)))
    assert marked.canvas.marks.sum() == 12 and (marked.canvas.codes == canvas.codes).all()
    # a drag that leaves the map counts at its edge
    px = images.code_map_cell_size((24, 32), EDIT_MAP)
    off = json.dumps([[-50, -50], [32 * px + 99, 24 * px + 99]])
    whole = h.edit.drag_photo("cifar10", canvas, 9, "rectangle", 0, off)
    assert (whole.canvas.codes == 9).all()


@pytest.mark.parametrize(
    "points",
    ["", "not json", "[1, 2]", "[[1, 2, 3]]", '[[1, "a"]]', "[[NaN, 1]]", "[]",
     json.dumps([[1, 1]] * (paint.MAX_STROKE + 1)), "[" * 5000 + "]" * 5000],
)  # fmt: skip
def test_a_bad_drag_is_refused_and_the_canvas_kept(h, photo_grid, points):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    before = canvas.codes.copy()
    with pytest.raises(gr.Error, match="drag"):
        h.edit.drag_photo("cifar10", canvas, 1, "brush", 1, points)
    assert (canvas.codes == before).all()


@pytest.mark.parametrize(
    "args, words",
    [
        ((99, "brush", 1), "code index"),
        ((1, "lasso", 1), "tool"),
        ((1, "brush", paint.MAX_RADIUS + 1), "radius"),
        ((1, "brush", 1.5), "radius"),
    ],
)
def test_bad_paint_settings_are_refused(h, photo_grid, args, words):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    with pytest.raises(gr.Error, match=words):
        h.edit.paint_photo("cifar10", canvas, *args, click((1, 1), (24, 32)))


def test_a_canvas_of_another_model_or_none_is_refused(h, photo_grid):
    canvas = h.edit.reset("cifar10", photo_grid).canvas
    with pytest.raises(gr.Error, match="reconstruct one first"):
        h.edit.paint_photo("mnist", canvas, 1, "brush", 1, click((1, 1), (24, 32)))
    with pytest.raises(gr.Error, match="reconstruct one first"):
        h.edit.paint_photo("cifar10", None, 1, "brush", 1, click((1, 1), (24, 32)))
    with pytest.raises(gr.Error, match="Click a cell"):
        h.edit.paint_photo("cifar10", canvas, 1, "brush", 1, click((30, 1), (24, 32)))


@pytest.fixture(scope="module")
def hg(grid_prior_models, tmp_path_factory):
    """Handlers over the same models, cifar10 with a grid prior."""
    return explorer.Handlers(
        grid_prior_models.models, grid_prior_models.examples,
        cache_dir=tmp_path_factory.mktemp("cache-gp"),
    )  # fmt: skip


def marked(h, canvas, a, b):
    """``canvas`` with the rectangle of corners ``a`` and ``b`` marked (two clicks)."""
    first = h.edit.paint_photo("cifar10", canvas, 0, "mark", 0, click(a, canvas.codes.shape))
    assert first.canvas.corner == a and first.canvas.marks is canvas.marks
    return h.edit.paint_photo("cifar10", first.canvas, 0, "mark", 0, click(b, canvas.codes.shape))


def test_resample_redraws_the_marked_cells_and_the_patch_equals_a_full_decode(hg, photo_grid):
    start = hg.edit.reset("cifar10", photo_grid)
    assert "train.grid_prior" not in start.note, "this model has a grid prior"
    canvas = start.canvas
    out = marked(hg, canvas, (15, 20), (6, 9))
    mask = np.zeros((24, 32), bool)
    mask[6:16, 9:21] = True
    assert (out.canvas.marks == mask).all() and (out.canvas.codes == canvas.codes).all()
    assert "Marked 120 cells (120 in all)" in out.note and "*Resample*" in out.note
    assert np.asarray(out.photo_map).tolist() != np.asarray(start.photo_map).tolist()
    new = hg.edit.resample_photo("cifar10", out.canvas, 1.0, 11)
    changed = new.canvas.codes != canvas.codes
    assert (new.canvas.codes[~mask] == canvas.codes[~mask]).all(), "unmarked cells keep codes"
    assert changed[mask].mean() > 0.5, "most marked cells drew another of the 32 codes"
    assert "seed **11**" in new.note and f"{changed.sum()} codes changed" in new.note
    assert (new.canvas.marks == mask).all(), "the marks stay, to draw again"
    gp = hg.models.get("cifar10").grid_prior
    expect = gp.complete(
        torch.from_numpy(canvas.codes)[None], torch.from_numpy(~mask),
        generator=torch.Generator().manual_seed(11),
    )[0].numpy()  # fmt: skip
    assert (new.canvas.codes == expect).all(), "the grid prior's draw for that seed"
    torch.testing.assert_close(
        new.canvas.picture, full_decode(hg, new.canvas.codes), atol=1e-5, rtol=0
    )
    assert (np.load(new.npy) == new.canvas.codes).all()
    shown = np.asarray(Image.open(new.image), float)
    assert np.abs(shown - images.to_uint8(new.canvas.picture[0])).max() == 0
    cold = hg.edit.resample_photo("cifar10", out.canvas, 0.1, 11)
    assert (cold.canvas.codes != new.canvas.codes).any(), "the temperature is used"


def test_resample_seeds_are_fresh_each_click_and_reproduce_a_draw(hg, photo_grid):
    canvas = marked(hg, hg.edit.reset("cifar10", photo_grid).canvas, (0, 0), (23, 31)).canvas
    a, b = (hg.edit.resample_photo("cifar10", canvas, 1.0, -1) for _ in range(2))
    seed_a, seed_b = (int(o.note.split("seed **")[1].split("**")[0]) for o in (a, b))
    assert seed_a != seed_b and (a.canvas.codes != b.canvas.codes).any()
    again = hg.edit.resample_photo("cifar10", canvas, 1.0, seed_a)
    assert (again.canvas.codes == a.canvas.codes).all(), "the seed shown draws the same again"
    torch.testing.assert_close(
        again.canvas.picture, full_decode(hg, again.canvas.codes), atol=1e-5, rtol=0
    )


def test_marks_add_up_and_clear(hg, photo_grid, monkeypatch):
    canvas = hg.edit.reset("cifar10", photo_grid).canvas
    with pytest.raises(gr.Error, match="No cells are marked"):
        hg.edit.resample_photo("cifar10", canvas, 1.0, 1)
    one = marked(hg, canvas, (0, 0), (1, 1)).canvas
    two = marked(hg, one, (10, 10), (10, 12))
    assert two.canvas.marks.sum() == 7 and "Marked 3 cells (7 in all)" in two.note
    monkeypatch.setattr(paint, "RESAMPLE_BOX", 11 * 13 - 1)  # the marks' box: 11 x 13 cells
    with pytest.raises(gr.Error, match="span a box of 143 cells; at most 142"):
        hg.edit.resample_photo("cifar10", two.canvas, 1.0, 1)
    monkeypatch.undo()
    cleared = hg.edit.clear_photo_marks("cifar10", two.canvas)
    assert cleared.canvas.marks is None and (cleared.canvas.codes == canvas.codes).all()
    with pytest.raises(gr.Error, match="No cells are marked"):
        hg.edit.resample_photo("cifar10", cleared.canvas, 1.0, 1)
    for bad, words in [((0, 1), "Temperature"), ((1.0, -2), "seed"), ((1.0, 0.5), "seed")]:
        with pytest.raises(gr.Error, match=words):
            hg.edit.resample_photo("cifar10", two.canvas, *bad)
    with pytest.raises(gr.Error, match="reconstruct one first"):
        hg.edit.resample_photo("cifar10", None, 1.0, 1)


def test_without_a_grid_prior_resampling_says_what_is_missing(h, photo_grid):
    start = h.edit.reset("cifar10", photo_grid)
    assert "no `grid_prior.safetensors`" in start.note
    assert "python -m train.grid_prior --vqvae cifar10" in start.note
    out = marked(h, start.canvas, (2, 2), (4, 4))
    assert out.canvas.marks.sum() == 9 and "python -m train.grid_prior" in out.note
    with pytest.raises(gr.Error, match="needs a grid prior.*python -m train.grid_prior"):
        h.edit.resample_photo("cifar10", out.canvas, 1.0, 1)


def test_decode_region_equals_the_same_pixels_of_a_full_decode(tiny_config):
    model = vqvae.VQVAE(tiny_config).eval()
    codes = torch.randint(0, 32, (1, 13, 17))
    full = model.decode_codes(codes)
    d = model.config.downsample
    for box in [(0, 0, 13, 17), (3, 4, 6, 9), (12, 16, 13, 17), (0, 5, 2, 17)]:
        region = model.decode_region(codes, box)
        expect = full[..., box[0] * d : box[2] * d, box[1] * d : box[3] * d]
        torch.testing.assert_close(region, expect, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not a box of cells of the 13x17 grid"):
        model.decode_region(codes, (5, 5, 5, 9))
    assert grid.widen((0, 2, 3, 17), 2, (13, 17)) == (0, 0, 5, 17)


def test_cover_fits_without_stretching():
    x = torch.zeros(1, 3, 40, 100)
    x[..., 30:50] = 1.0  # a bright band near the left, cut off by the centre crop
    x[..., 45:55] = 0.5  # the middle stays in the middle
    y = images.cover(x, (60, 60))
    assert y.shape == (1, 3, 60, 60)
    assert abs(float(y[0, 0, 30, 30]) - 0.5) < 0.05
    assert float(y[..., :, :3].max()) > 0.9, "the band's right end, scaled by 1.5"
    assert images.cover(x, (40, 100)) is not None and torch.equal(images.cover(x, (40, 100)), x)


def test_two_photos_of_different_sizes_interpolate_at_the_first_ones_size(h, tmp_path):
    a = save_photo(tmp_path / "a.png", "astronaut", slice(0, 60), slice(0, 90))
    b = save_photo(tmp_path / "b.png", "coffee", slice(0, 100), slice(0, 50))
    out = h.interpolate.gif(a, b, "cifar10", frames=4, fps=10, path="lerp", pingpong=False)
    k = 224 // 90  # the GIF enlarges small frames towards 224 px, by a whole factor
    frames = iio.imread(out.gif)[:, ::k, ::k]
    assert frames.shape[:3] == (4, 60, 90), "A's own size, no thumbnail"
    assert out.strip.size[0] > out.strip.size[1]
    # the walk ends at B fitted to A's size: resized to cover it, centre-cropped
    m = h.models.get("cifar10").model
    xb = images.cover(images.load_photo(b)[0], (60, 90))
    end = m.decode_codes(m.encode_image(xb), (60, 90))[0]
    assert np.abs(frames[-1].astype(float) - images.to_uint8(end)).mean() < 3
    back = h.interpolate.gif(b, a, "cifar10", frames=3, fps=10, path="codebook", pingpong=False)
    assert iio.imread(back.gif).shape[1:3] == (200, 100)  # B's size, enlarged twice


def test_a_photos_frames_are_bounded_by_the_pixel_budget(h, tmp_path, monkeypatch):
    monkeypatch.setattr(explorer.tabs.interpolate, "INTERPOLATE_PIXELS", 5 * 60 * 90)
    a = save_photo(tmp_path / "a.png", "astronaut", slice(0, 60), slice(0, 90))
    with pytest.raises(gr.Error, match="At most 5 frames for a 90x60 image A, got 6"):
        h.interpolate.gif(a, a, "cifar10", frames=6)
    # on page load (examples) the photos are walked in AUTO_FRAMES frames, downscaled to
    # what the page may ask for by itself, where at full size it would have room for two
    monkeypatch.setattr(explorer.tabs.interpolate, "INTERPOLATE_AUTO_PIXELS", 2 * 60 * 90)
    b = save_photo(tmp_path / "b.png", "coffee", slice(0, 60), slice(0, 90))
    walked = []
    real = vqvae.interpolate

    def spy(model, a, b, **kw):
        walked.append(a.shape[-2:])
        return real(model, a, b, **kw)

    monkeypatch.setattr(vqvae, "interpolate", spy)
    out = h.interpolate.gif_if_any(a, b, "cifar10", 24, 10, "lerp", False)
    frames = explorer.tabs.interpolate.AUTO_FRAMES
    assert gif_ms(out.gif) == frames * 100, f"{frames} frames of 100 ms"
    ((H, W),) = walked
    assert frames * H * W <= 2 * 60 * 90 and W / H == pytest.approx(1.5, rel=0.1)
    assert gif_ms(h.interpolate.gif_if_any(a, b, "cifar10", 3, 10, "lerp", False).gif) == 300
