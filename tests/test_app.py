"""The app's handlers, called directly: every tab's main action, and the bad inputs a user or
an API client can send. Tiny random models, so the numbers are not the point: shapes, files,
consistency between paths (an inverted or transparent digit gives the same codes as the plain
one) and clear errors are."""

from __future__ import annotations

import io
import json
import math
import warnings
from collections import defaultdict
from pathlib import Path

import gradio as gr
import imageio.v3 as iio
import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

import explorer
from app_helpers import digits, gif_ms
from explorer import settings

warnings.filterwarnings("ignore", message=".*outside of a gradio app.*")


@pytest.fixture(scope="module")
def digit_png(plain_models):
    return str(plain_models.examples / "mnist" / "00.png")


def codes_of(out) -> np.ndarray:
    return out.grid.to_numpy()


def save(im: Image.Image, path, **kw) -> str:
    im.save(path, **kw)
    return str(path)


def select(index) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


# -- Reconstruct ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, grid", [("mnist", 7), ("cifar10", 8)])
def test_reconstruct_outputs(h, plain_models, name, grid):
    out = h.reconstruct.image(str(plain_models.examples / name / "01.png"), name, "thumbnail")
    # enlarged by an integer factor (no blur): 28 -> 252, 32 -> 256; code map 7x36, 8x32
    side = 252 if name == "mnist" else 256
    assert out.original.size == out.reconstruction.size == (side, side)
    assert out.code_map.size == (grid * (256 // grid),) * 2
    a = np.asarray(out.original)
    k = side // (28 if name == "mnist" else 32)
    assert (a[::k, ::k].repeat(k, 0).repeat(k, 1) == a).all(), "nearest-neighbour enlargement"
    assert out.grid.shape == (grid, grid)
    c = out.grid.to_numpy()
    assert c.min() >= 0 and c.max() < 32
    assert out.codes_used == len(np.unique(c))
    assert out.bits == pytest.approx(grid * grid * math.log2(32), abs=0.1)
    assert 0 < out.psnr < 100


def test_dark_on_light_digit_is_inverted(h, digit_png, tmp_path):
    plain = h.reconstruct.image(digit_png, "mnist")
    inv = save(Image.fromarray(255 - digits(1)[0]), tmp_path / "inv.png")
    out = h.reconstruct.image(inv, "mnist")
    assert (codes_of(out) == codes_of(plain)).all()
    assert np.asarray(out.original)[:8].mean() < 30, "the border is dark after inversion"


def test_example_click_is_cached(h, plain_models):
    first = h.reconstruct.example_click("mnist", "own", select(2))
    again = h.reconstruct.example_click("mnist", "own", select(2))
    assert first.image.endswith("02.png")
    assert again.original is first.original, "the second click reuses the cached outputs"


def test_drawing_is_reconstructed(h):
    # a black stroke on a transparent canvas, as the drawing pad sends it
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150] = (0, 0, 0, 255)
    out = h.reconstruct.drawing({"composite": canvas, "background": None, "layers": []}, "mnist")
    a = np.asarray(out.original).astype(float)
    assert a[:, :20].mean() < 10 and a[100:150, 115:135].mean() > 200, "white stroke on black"
    empty = h.reconstruct.drawing({"composite": np.zeros((280, 280, 4), np.uint8)}, "mnist")
    assert all(isinstance(o, dict) for o in empty), "an empty canvas changes nothing"


# Files that differ in format but not in content: all must give the plain digit's codes.
def _rgba(fg):
    d = digits(1)[0]
    a = np.zeros((28, 28, 4), np.uint8)
    a[..., :3] = fg
    a[..., 3] = d
    return Image.fromarray(a, "RGBA")


SAME_DIGIT = {
    "16-bit": lambda p: save(Image.fromarray(digits(1)[0].astype(np.uint16) * 257), p / "a.png"),
    "palette": lambda p: save(Image.fromarray(digits(1)[0]).convert("P"), p / "a.png"),
    "rgb": lambda p: save(Image.fromarray(digits(1)[0]).convert("RGB"), p / "a.png"),
    "white on transparent": lambda p: save(_rgba(255), p / "a.png"),
    "black on transparent": lambda p: save(_rgba(0), p / "a.png"),
    "LA": lambda p: save(_rgba(255).convert("LA"), p / "a.png"),
    "animated": lambda p: save(
        Image.fromarray(digits(1)[0]),
        p / "a.gif",
        save_all=True,
        append_images=[Image.new("L", (28, 28), 255)],
        duration=100,
    ),
    "bigger": lambda p: save(
        Image.fromarray(digits(1)[0]).resize((280, 280), Image.NEAREST), p / "a.png"
    ),
}


@pytest.mark.parametrize("kind", SAME_DIGIT)
def test_formats_give_the_same_codes(h, digit_png, tmp_path, kind):
    path = SAME_DIGIT[kind](tmp_path)
    if kind == "16-bit":
        assert Image.open(path).mode.startswith("I")
    out = h.reconstruct.image(path, "mnist")
    plain = codes_of(h.reconstruct.image(digit_png, "mnist"))
    agree = (codes_of(out) == plain).mean()
    assert agree >= (0.8 if kind == "bigger" else 1.0), f"{kind}: {agree:.0%} of codes agree"


# Files in unusual modes and shapes, and what the model must see: a uniform colour (its RGB
# value in 8 bits), or the digit they hold.
ODD = {
    "1x1": (lambda p: save(Image.new("RGB", (1, 1), (200, 10, 10)), p / "one.png"), "colour"),
    "1x3000": (lambda p: save(Image.new("L", (1, 3000), 90), p / "strip.png"), (90,) * 3),
    "int32": (lambda p: save(Image.new("I", (40, 30), 70000), p / "int32.tif"), (255,) * 3),
    "float": (lambda p: save(Image.new("F", (40, 30), 0.5), p / "float.tif"), (128,) * 3),
    "1-bit": (lambda p: save(Image.new("1", (30, 30), 1), p / "bits.png"), (255,) * 3),
    "cmyk-tiff": (
        lambda p: save(Image.fromarray(digits(1)[0]).convert("CMYK"), p / "cmyk.tif"),
        "digit",
    ),
    "cmyk-jpeg": (
        lambda p: save(Image.fromarray(digits(1)[0]).convert("CMYK"), p / "cmyk.jpg"),
        "digit",
    ),
}


@pytest.mark.parametrize("kind", ODD)
def test_odd_but_valid_images(h, tmp_path, kind):
    make, expect = ODD[kind]
    path = make(tmp_path)
    for name in ("mnist", "cifar10"):
        if expect == "colour" and name == "mnist":
            with pytest.raises(gr.Error, match="colour picture") as e:
                h.reconstruct.image(path, name)  # a digit model would turn it into grey mush
            # and says which models read photos, in the menu's order, from their configs
            assert h.models.colour_names() == [n for n in h.models.names() if "cifar" in n]
            assert "for photos choose cifar10 in the Model menu" in str(e.value)
            continue
        out = h.reconstruct.image(path, name, "thumbnail")
        seen = np.asarray(out.original).astype(float)  # the input as the model sees it
        assert out.reconstruction.size == out.original.size
        if expect == "digit":
            plain = h.reconstruct.image(
                save(Image.fromarray(digits(1)[0]), tmp_path / "d.png"), name, "thumbnail"
            )
            diff = np.abs(seen - np.asarray(plain.original).astype(float)).mean()
            assert diff < (8 if kind == "cmyk-jpeg" else 1), f"{name}: the digit, {diff:.1f} off"
        else:
            assert (seen == seen[0, 0]).all(), f"{name}: a uniform image stays uniform"
            if name == "cifar10":  # colour, never inverted
                colour = (200, 10, 10) if expect == "colour" else expect
                assert np.abs(seen[0, 0] - np.array(colour)).max() <= 1


def test_exif_orientation_is_applied(h, tmp_path):
    a = np.zeros((28, 28), np.uint8)
    a[:, :14] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(Image.fromarray(a), tmp_path / "rot.jpg", exif=exif, quality=95)
    shown = np.asarray(
        h.reconstruct.image(path, "cifar10", "thumbnail").original.convert("L"), float
    )
    assert shown[:100].mean() > 200 and shown[-100:].mean() < 50, "white half is now on top"


BAD = {
    "none": (lambda p: None, "No image"),
    "empty file": (lambda p: _write(p / "e.png", b""), "empty"),
    "text as png": (lambda p: _write(p / "t.png", b"hello, not a picture"), "not an image"),
    "truncated png": (lambda p: _truncated(p), "corrupt"),
    "missing": (lambda p: str(p / "nope.png"), "No such file"),
    "bomb": (lambda p: save(Image.new("1", (8000, 8000)), p / "bomb.png"), "megapixels"),
    "huge": (lambda p: save(Image.new("1", (12000, 12000)), p / "huge.png"), "megapixels"),
}


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _truncated(p):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, "PNG")
    (p / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(p / "trunc.png")


@pytest.mark.parametrize("kind", BAD)
def test_bad_images_give_clear_errors(h, tmp_path, kind):
    make, words = BAD[kind]
    with pytest.raises(gr.Error, match=words):
        h.reconstruct.image(make(tmp_path), "mnist")
    with pytest.raises(gr.Error, match=words):
        h.interpolate.gif(make(tmp_path), make(tmp_path), "mnist")


def test_unknown_model(h, digit_png):
    with pytest.raises(gr.Error, match="Unknown model"):
        h.reconstruct.image(digit_png, "no-such-model")


# -- Codebook ---------------------------------------------------------------------------------


def test_codebook_plot_rings_the_image_codes(h, digit_png):
    codes = h.reconstruct.image(digit_png, "mnist").grid
    view = h.codebook.figure("mnist", "2-D", codes)
    fig, summary = view.figure, view.summary
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    everything, ringed = fig.data
    assert len(everything.x) == 32
    assert sorted(int(r[0]) for r in ringed.customdata) == sorted(np.unique(codes.to_numpy()))
    assert f"**{len(np.unique(codes.to_numpy()))}** distinct codes" in summary
    fig3 = h.codebook.figure("mnist", "3-D", None).figure
    assert isinstance(fig3.data[0], go.Scatter3d) and len(fig3.data[1].x) == 0
    hover = fig.data[0].customdata[5]
    usage = json.loads((h.models.models_dir / "mnist" / "codebook.json").read_text())["usage"]
    assert hover[1] == usage[5]


def test_codebook_bad_inputs(h):
    with pytest.raises(gr.Error, match="view"):
        h.codebook.figure("mnist", "4-D", None)
    with pytest.raises(gr.Error, match="7x7"):
        h.codebook.figure("mnist", "2-D", [[1, 2], [3, 4]])


def test_atlas_and_code_details(h):
    atlas = h.codebook.atlas("mnist")
    assert len(atlas) == 32
    usage = np.array(
        json.loads((h.models.models_dir / "mnist" / "codebook.json").read_text())["usage"]
    )
    first = int(atlas[0][1].lstrip("#"))
    assert usage[first] == usage.max(), "most used first"
    assert Image.open(atlas[0][0]).size == (84, 84)
    # a click on the atlas picks that code
    assert h.codebook.atlas_pick("mnist", select(0)) == first
    code = h.codebook.code("mnist", first)
    assert code.image.size == (252, 252)
    assert "rank **1**" in code.details and f"{usage[first]:,}" in code.details
    assert len(code.neighbours) == 8 and f"#{first}" not in [c for _, c in code.neighbours]
    for bad in (-1, 32, 1e9, 2.5, "x", None, float("inf"), float("nan"), [3], True):
        with pytest.raises(gr.Error):
            h.codebook.code("mnist", bad)


# -- Edit -------------------------------------------------------------------------------------


def test_edit_paint_fill_reset(h, digit_png):
    table = h.reconstruct.image(digit_png, "mnist").grid
    decoded = h.edit.decode("mnist", table)
    assert Image.open(decoded.png).size == (28, 28)
    assert (np.load(decoded.npy) == table.to_numpy()).all()
    # click the centre of cell (row 2, col 5) of the 252 px code map (cells of 36 px)
    new = h.edit.paint("mnist", table, 31, select([5 * 36 + 18, 2 * 36 + 18])).grid
    expect = table.to_numpy().copy()
    expect[2, 5] = 31
    assert (new.to_numpy() == expect).all()
    filled = h.edit.fill("mnist", table, 7).grid.to_numpy()
    assert (filled == 7).all()
    back = h.edit.reset("mnist", table).grid.to_numpy()
    assert (back == table.to_numpy()).all()
    # the table the browser sends back: lists, numbers maybe as strings
    as_strings = [[str(v) for v in row] for row in expect.tolist()]
    assert (np.load(h.edit.decode("mnist", as_strings).npy) == expect).all()
    assert (
        np.load(h.edit.decode("mnist", {"headers": [], "data": expect.tolist()}).npy) == expect
    ).all()


@pytest.mark.parametrize(
    "grid, words",
    [
        (np.full((7, 7), 32), "between 0 and 31"),
        (np.full((7, 7), -1), "between 0 and 31"),
        (np.zeros((6, 7)), "7x7"),
        (np.zeros((7, 7, 2)), "7x7"),
        ([[0] * 7] * 6 + [[0] * 6 + ["x"]], "whole number"),
        ([[0] * 7] * 6 + [[0] * 6 + [1.5]], "whole number"),
        ([[0] * 7] * 6 + [[0] * 6 + [float("nan")]], "whole number"),
        ([], "empty"),
        (None, "empty"),
    ],
)
def test_edit_bad_grids(h, grid, words):
    with pytest.raises(gr.Error, match=words):
        h.edit.decode("mnist", grid)


def test_paint_bad_code(h, digit_png):
    table = h.reconstruct.image(digit_png, "mnist").grid
    with pytest.raises(gr.Error, match="between 0 and 31"):
        h.edit.paint("mnist", table, 99, select([1, 1]))


@pytest.mark.parametrize("where", [7, None, [1], [-40, -40], [-300, -300], [252, 10], ["a", 1]])
def test_paint_outside_the_map(h, digit_png, where):
    """A click the page cannot send: refused, instead of painting some other cell."""
    table = h.reconstruct.image(digit_png, "mnist").grid
    with pytest.raises(gr.Error, match="Click a cell"):
        h.edit.paint("mnist", table, 3, select(where))


# -- Interpolate ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["lerp", "slerp", "codebook"])
def test_interpolate_writes_a_looping_gif(h, plain_models, path):
    a, b = (str(plain_models.examples / "cifar10" / f"0{i}.png") for i in (0, 1))
    out = h.interpolate.gif(a, b, "cifar10", frames=10, fps=20, path=path, pingpong=True)
    frames = iio.imread(out.gif)
    assert frames.shape[1:3] == (224, 224)
    assert iio.immeta(out.gif)["loop"] == 0
    # Pillow merges identical consecutive frames (adding their delays), so count time:
    # ping-pong plays 10 frames forwards, then 8 back (the ends are not repeated), 50 ms each.
    assert gif_ms(out.gif) == (10 + 8) * 50
    assert out.strip.size[0] > out.strip.size[1]
    once = h.interpolate.gif(a, b, "cifar10", frames=5, fps=10, path=path, pingpong=False)
    assert gif_ms(once.gif) == 5 * 100


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(frames=0), "frames"),
        (dict(frames=10**6), "frames"),
        (dict(frames="many"), "numbers"),
        (dict(fps=0), "per second"),
        (dict(fps=1000), "per second"),
        (dict(path="zigzag"), "Path"),
        (dict(path=["lerp"]), "Path"),
        (dict(frames=float("inf")), "frames"),
        (dict(frames=float("nan")), "frames"),
        (dict(frames=[3]), "numbers"),
        (dict(fps=float("inf")), "per second"),
    ],
)
def test_interpolate_bad_settings(h, digit_png, kw, words):
    with pytest.raises(gr.Error, match=words):
        h.interpolate.gif(digit_png, digit_png, "mnist", **kw)


def test_interp_example_alternates(h):
    first = h.interpolate.example_click("mnist", "A", select(3))
    assert first.image_a.endswith("03.png") and first.target == "B"
    second = h.interpolate.example_click("mnist", "B", select(4), image_a=first.image_a)
    assert second.image_b.endswith("04.png") and second.target == "A"
    assert second.image_a.endswith("03.png"), "the other side is handed back as it was"


@pytest.mark.parametrize("index", [99, -1, 10**6, "a", 1.5, None, [1, 2]])
def test_gallery_picks_out_of_range(h, index):
    with pytest.raises(gr.Error):
        h.interpolate.example_click("mnist", "A", select(index))
    with pytest.raises(gr.Error):
        h.codebook.atlas_pick("mnist", select(index if index != 99 else 32))
    with pytest.raises(gr.Error):
        h.reconstruct.example_click("mnist", "own", select(index))


# -- the app ----------------------------------------------------------------------------------


def test_build_app_exposes_the_api(plain_models, tmp_path):
    demo, handlers = explorer.build_app(
        plain_models.models, plain_models.examples, cache_dir=tmp_path
    )
    public = {f.api_name for f in demo.fns.values() if f.api_visibility == "public"}
    assert {"reconstruct", "codebook", "edit", "interpolate", "code"} <= public
    assert handlers.models.names() == ["mnist", "cifar10"]
    # every event that runs a model waits for the same CONCURRENCY slots, or for the
    # expensive queue's (explorer.fairness)
    group = defaultdict(set)
    for f in demo.fns.values():
        group[f.concurrency_id].add(f.api_name.removesuffix("_1"))  # events wired twice
    runs_model = {"reconstruct_upload", "reconstruct_drawing", "paint", "fill", "reset"}
    expensive = {"sample", "resample", "compress", "compare_rates", "decompress", "interpolate"}
    assert expensive | {"first_interpolation", "resample_photo"} == group["expensive"]
    assert (public - expensive) | runs_model <= group["model"]


def test_a_tab_out_of_view_waits_for_its_opening():
    """What a model switch computes for a tab (an atlas, the first GIF) runs only for the open
    tab, once per model, and a quick check decides: a page opened on Reconstruct sends no
    interpolation job to the expensive queue."""
    from explorer.ui import for_open_tab, private

    class Dep:
        def then(self, fn, inputs, outputs, **options):
            self.fn, self.inputs, self.outputs, self.options = fn, inputs, outputs, options

    calls = []
    with gr.Blocks() as demo:
        image, out_a, out_b, model, shown_tab = (gr.State() for _ in range(5))
        refresh = for_open_tab(lambda x: calls.append(x) or ("a", "b"), [image], [out_a, out_b],
                               tab="Interpolate", model=model, shown_tab=shown_tab,
                               **private("gif", expensive=True))  # fmt: skip
    check = Dep()
    refresh(check)
    assert check.inputs[:2] == [model, shown_tab] and "concurrency_id" not in check.options
    assert check.fn("cifar10", "Reconstruct", None) == gr.skip()
    assert check.fn("cifar10", "Interpolate", "cifar10") == gr.skip()  # it shows this model's
    first, second = check.fn("cifar10", "Interpolate", None), check.fn("mnist", "Interpolate", "x")
    assert first != second  # each a new value: the state's change runs the job
    (job,) = [f for f in demo.fns.values() if f.api_name == "gif"]
    assert job.concurrency_id == "expensive" and [t[1] for t in job.targets] == ["change"]
    assert job.fn("mnist", "digit.png") == ("a", "b", "mnist") and calls == ["digit.png"]


def test_select_model(h):
    v = h.select_model("cifar10")
    assert "3-channel 32x32" in v.card and "8x8 codes" in v.card and "PSNR" in v.card
    assert v.draw["visible"] is False and v.no_draw["visible"] is True, "no drawing for colour"
    assert h.select_model("mnist").draw["visible"] is True
    assert len(v.examples) == 6 and v.image_a.endswith("00.png") and v.image_b.endswith("01.png")
    assert v.pick["maximum"] == 31 and v.paint_code["maximum"] == 31


def test_no_models_no_examples(tmp_path, plain_models):
    _, empty = explorer.build_app(tmp_path / "none", tmp_path / "none", cache_dir=tmp_path / "c1")
    assert empty.models.names() == []
    # a model without example images: nothing to show yet, and no error either
    h = explorer.Handlers(plain_models.models, tmp_path / "no-examples", cache_dir=tmp_path / "c2")
    v = h.select_model("mnist")
    assert v.examples == [] and v.image_a is None and v.image_b is None
    assert h.reconstruct.example("mnist").image is None
    assert all(isinstance(o, dict) for o in h.interpolate.gif_if_any(None, None, "mnist"))


def test_hidden_folders_are_no_models(plain_models, tmp_path):
    """An interrupted export leaves pretrained/.NAME.tmp: it is not listed, nor loadable."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(plain_models.models, models)
    shutil.copytree(models / "mnist", models / ".mnist.tmp")
    h = explorer.Handlers(models, plain_models.examples, cache_dir=tmp_path / "cache")
    assert h.models.names() == ["mnist", "cifar10"]
    with pytest.raises(gr.Error, match="Unknown model"):
        h.select_model(".mnist.tmp")


# -- the machine ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "affinity, cpu_max, expect",
    [
        (16, "200000 100000\n", 2),  # a 2-vCPU Space on a 16-core host
        (16, "150000 100000\n", 2),  # 1.5 CPUs: round up
        (16, "max 100000\n", 16),  # no quota
        (3, "400000 100000\n", 3),  # pinned to 3 cores
        (4, None, 4),  # no cgroup v2 file
        (4, "garbage", 4),
    ],
)
def test_usable_cpus(tmp_path, monkeypatch, affinity, cpu_max, expect):
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 64)  # the host: never the answer
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max)
    assert settings.usable_cpus(tmp_path) == expect


def test_torch_threads_follow_usable_cpus(tmp_path, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: set(range(16)))
    (tmp_path / "cpu.max").write_text("200000 100000")
    try:
        assert explorer.configure_process(settings.usable_cpus(tmp_path)) == 1  # 2 CPUs, 2 requests
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_photo_runs_on_every_core_one_torch_thread_a_worker():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert settings.photo_workers(2) == 2 and settings.photo_workers(1) == 1
        torch.set_num_threads(2)  # 4 CPUs, 2 requests: 2 threads each, tiles on 2 workers
        assert settings.photo_workers(4) == 2 and settings.photo_workers(1) == 1
    finally:
        torch.set_num_threads(before)


def test_binary_files_go_through_git_lfs():
    """Hugging Face Spaces refuse binary files outside Git LFS."""
    import fnmatch

    root = settings.ROOT
    rules = [
        line.split()[0]
        for line in (root / ".gitattributes").read_text().splitlines()
        if "filter=lfs" in line
    ]
    binaries = [*root.glob("pretrained/*/*"), *root.glob("assets/**/*"), *root.glob("tests/data/*")]
    binaries = [p for p in binaries if p.is_file() and p.suffix not in (".json", ".md", ".txt")]
    assert binaries
    for p in binaries:
        assert any(fnmatch.fnmatch(p.name, r) for r in rules), f"{p.name} is not stored in LFS"


# -- disk -------------------------------------------------------------------------------------


def _folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_disk_stays_bounded_after_many_gifs(plain_models, tmp_path):
    """300 GIF requests of one client: its files, written in Gradio's cache when the app
    owns it (served from there, no second copy), stay within its budget (a small budget
    here, as these tiny GIFs are small; the defaults add up to under 512 MB)."""
    gradio_cache = tmp_path / "gradio"
    gradio_cache.mkdir()
    budget = 100_000
    h = explorer.Handlers(
        plain_models.models,
        plain_models.examples,
        cache_dir=tmp_path / "cache",
        output_budget=4 * budget,
        gradio_cache=gradio_cache,
    )
    h.files.session_budget = budget
    a, b = (str(plain_models.examples / "mnist" / f"0{i}.png") for i in (0, 1))
    biggest = 0
    for i in range(300):
        gif = h.interpolate.gif(a, b, "mnist", 2 + i % 3, 12, "lerp", False).gif
        biggest = max(biggest, Path(gif).stat().st_size)
    assert Path(gif).is_file(), "the newest file is kept"
    assert Path(gif).is_relative_to(gradio_cache)
    # trimmed before each write; a few newest files are always kept (in flight)
    assert _folder_bytes(h.files.folder) <= budget + (2 * settings.CONCURRENCY + 1) * biggest
    assert _folder_bytes(gradio_cache) == _folder_bytes(h.files.folder) == h.files.total()
    assert settings.OUTPUT_BUDGET + settings.GRADIO_CACHE_BUDGET < 512 * 2**20


# -- library pieces the app draws with ----------------------------------------------------------


@pytest.mark.parametrize("shape, size", [((7, 7), 256), ((8, 8), 256), ((4, 6), 100)])
def test_code_map_cell_matches_the_drawn_map(shape, size):
    """Every pixel of a cell in code_map_image maps back to that cell; outside is refused."""
    from vqvae.images import code_map_cell, code_map_image

    codes = np.arange(shape[0] * shape[1]).reshape(shape) % 32
    im = code_map_image(codes, 32, size)
    w, h = im.size
    cell = w // shape[1]
    assert h == cell * shape[0]
    for i in range(shape[0]):
        for j in range(shape[1]):
            for x, y in ((j * cell, i * cell), ((j + 1) * cell - 1, (i + 1) * cell - 1)):
                assert code_map_cell((x, y), shape, size) == (i, j)
    for outside in ((w, 0), (0, h), (-1, 0), (0, -0.5)):
        with pytest.raises(ValueError, match="outside"):
            code_map_cell(outside, shape, size)


def test_codebook_figure_is_a_function_of_its_inputs():
    from vqvae.viz import codebook_figure

    rng = np.random.default_rng(0)
    usage = rng.integers(0, 100, 16)
    fig = codebook_figure(rng.normal(size=(16, 2)), usage, [[3, 3], [5, 15]], title="t")
    everything, ringed = fig.data
    assert isinstance(everything, go.Scattergl) and len(everything.x) == 16
    assert sorted(int(r[0]) for r in ringed.customdata) == [3, 5, 15]
    assert [int(r[3]) for r in ringed.customdata] == [2, 1, 1], "cells per highlighted code"
    assert [int(r[1]) for r in everything.customdata] == usage.tolist()
    fig3 = codebook_figure(rng.normal(size=(16, 3)), usage)
    assert isinstance(fig3.data[0], go.Scatter3d) and len(fig3.data[1].x) == 0
    with pytest.raises(ValueError, match="coords"):
        codebook_figure(rng.normal(size=(15, 2)), usage)
    with pytest.raises(ValueError, match="highlighted"):
        codebook_figure(rng.normal(size=(16, 2)), usage, [16])


def test_models_from_the_hub_and_shipped_names_beside_the_models_folder(
    plain_models, prior_models, tmp_path, monkeypatch
):
    """--model / $VQVAE_MODELS: a Hub repo id (read here from an offline Hub cache, with the
    extras the repo has: its prior, codebook.json, card) and a shipped name, listed after the
    models folder's own."""
    from hub_helpers import COMMIT_A, hub_cache, offline_hub

    offline_hub(monkeypatch, tmp_path / "hub")
    hub_cache(tmp_path / "hub", "org/digits", prior_models.models / "mnist", COMMIT_A)
    monkeypatch.setenv("VQVAE_MODELS", " org/digits, mnist ")
    _, h = explorer.build_app(plain_models.models, plain_models.examples, tmp_path / "cache")
    assert h.models.names() == ["mnist", "cifar10", "org/digits"], (
        "a shipped name is not listed twice"
    )
    m = h.models.get("org/digits")
    assert m.prior is not None and m.card and len(m.usage) == 32
    out = h.reconstruct.image(str(plain_models.examples / "mnist" / "00.png"), "org/digits")
    assert out.grid.shape == (7, 7)
    assert len(h.sample.draw("org/digits", "three", 2, 1.0, 0, 1.0, 0).gallery) == 2
    # a repo that is not in the cache (offline): the model says why, the others still work
    bad = explorer.Handlers(
        plain_models.models, plain_models.examples, tmp_path / "c2", sources=["org/none"]
    )
    with pytest.raises(gr.Error, match="could not be loaded"):
        bad.models.get("org/none")
    assert bad.reconstruct.image(str(plain_models.examples / "mnist" / "00.png"), "mnist").psnr > 0


# -- photos at their own resolution -------------------------------------------------------------


def _photo(tmp_path, w: int, h: int, name: str = "photo.png") -> str:
    """A smooth colour picture (gradients, a disc) of w x h pixels."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    disc = ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05) * 0.5
    a = np.stack([xx, yy, np.clip(1 - xx + disc, 0, 1)], -1)
    return save(Image.fromarray((a * 255).astype(np.uint8)), tmp_path / name)


def test_a_colour_model_reads_a_photo_at_its_own_resolution(h, tmp_path):
    out = h.reconstruct.image(_photo(tmp_path, 61, 30), "cifar10")
    assert out.original.size == out.reconstruction.size == (61, 30), "the input's size"
    assert out.grid.shape == (8, 16), "ceil(30 / 4) x ceil(61 / 4) codes"
    assert out.code_map.size == (64, 32), "cells of 4 px, aligned with the picture"
    assert out.bits == pytest.approx(8 * 16 * math.log2(32), abs=0.1)
    assert 0 < out.psnr < 100
    thumb = h.reconstruct.image(_photo(tmp_path, 61, 30), "cifar10", "thumbnail")
    assert thumb.original.size == (256, 256) and thumb.grid.shape == (8, 8)
    with pytest.raises(gr.Error, match="size must be"):
        h.reconstruct.image(_photo(tmp_path, 61, 30), "cifar10", "huge")


def test_a_photo_above_the_cap_is_downscaled_never_cropped(h, tmp_path):
    path = _photo(tmp_path, 1500, 1000)
    out = h.reconstruct.image(path, "cifar10", announce=False)
    w, hh = out.original.size
    assert w * hh <= settings.MAX_PHOTO_PIXELS and abs(w / hh - 1.5) < 0.01, "aspect kept"
    small = np.asarray(Image.open(path).resize((w, hh), Image.BILINEAR), float)
    shown = np.asarray(out.original, float)
    assert np.abs(small - shown).mean() < 2, "the whole picture, only smaller"


def test_a_photo_grid_edits_and_rings_but_resamples_only_as_a_thumbnail(h, tmp_path):
    grid = h.reconstruct.image(_photo(tmp_path, 40, 24), "cifar10").grid
    assert grid.shape == (6, 10)
    decoded = h.edit.decode("cifar10", grid)
    assert Image.open(decoded.png).size == (40, 24)
    assert "This image uses" in h.codebook.figure("cifar10", "2-D", grid).summary
    view = h.edit.code_map_view("cifar10", grid, None, False)
    assert "Plain: **300 bits**" in view.bits
    with pytest.raises(gr.Error, match="7x7"):  # a digit model takes its thumbnail grid only
        h.edit.decode("mnist", grid)
    row = [0] * 1024  # 1024 x 1024 cells: refused before any array is built
    with pytest.raises(gr.Error, match="table of whole numbers"):
        h.edit.decode("cifar10", [row] * 1024)
    with pytest.raises(gr.Error, match=r"got 300x300"):  # a near miss says its shape
        h.edit.decode("cifar10", [[0] * 300] * 300)


def test_the_colour_models_are_named_from_their_configs_without_loading(tmp_path):
    from explorer import inputs
    from explorer.store import ModelStore

    for name, config in [("b-rgb", '{"in_channels": 3}'), ("a-grey", '{"in_channels": 1}'),
                         ("c-rgb", '{"in_channels": 3}'), ("d-broken", "{not json"),
                         ("e-list", "[3]")]:  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
        (tmp_path / name / "model.safetensors").write_bytes(b"not weights: never read")
    store = ModelStore(tmp_path, tmp_path / "examples", tmp_path / "cache")
    assert store.colour_names() == ["b-rgb", "c-rgb"]
    assert inputs.choose_colour(store.colour_names()) == (
        "for photos choose b-rgb or c-rgb in the Model menu."
    )
    assert inputs.choose_colour(["x", "y", "z"]) == "for photos choose x, y or z in the Model menu."
    assert inputs.choose_colour([]) == "choose a colour model for photos."
