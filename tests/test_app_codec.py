"""The Reconstruct tab's codec panel (/compress, /decompress): .vqz files under a tiny prior,
JPEG and WebP at the matched size, clear errors for foreign, corrupted and oversized files, a
model without a prior; and code_map_image drawn as fast as it is drawn right."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

import explorer
import vqvae
from app_helpers import call_event, fn_index
from explorer import inputs
from explorer.settings import MAX_VQZ_BYTES, REFINE_PIXEL_STEPS
from explorer.tabs.codec import ENCODERS, Compressed, Decompressed, Encoder, RateCurves
from explorer.tabs.reconstruct import Reconstruction
from tools import browser
from vqvae import codec, compare, images, rd


@pytest.fixture(scope="module")
def h(prior_models):
    return explorer.Handlers(
        prior_models.models, prior_models.examples, prior_models.root / "cache"
    )


def digit(prior_models, i=0) -> str:
    return str(prior_models.examples / "mnist" / f"{i:02d}.png")


# -- handlers ----------------------------------------------------------------------------------


def test_compress_gives_a_vqz_file_its_sizes_and_jpeg_webp_at_that_size(h, prior_models):
    r = h.codec.compress(digit(prior_models), "mnist", "whole file")
    data = Path(r.vqz).read_bytes()
    info = codec.read_header(data)
    m = h.models.get("mnist")
    x = inputs.model_input(m, digit(prior_models), announce=False)
    prior = vqvae.load_prior(prior_models.models / "mnist", model=m.model)
    codes, labels = codec.decompress_codes(prior, data, model=m.model)
    # the file codes the class under which the codes cost least (or none)
    assert torch.equal(codes, m.model.encode(x))
    assert labels.tolist() == codec.cheapest_labels(prior, codes)
    # sizes side by side: plain bits, the prior's NLL + the class, the file, PNG
    nll = float(prior.nll_bits(codes, labels)[0]) + math.log2(11)
    cls = prior.config.class_name(int(labels[0]))
    assert f"| codes under the prior, class {cls} (their NLL + the class) |" in r.sizes
    png = io.BytesIO()
    Image.fromarray(images.to_uint8(x[0])).save(png, format="PNG", optimize=True)
    png = png.tell()
    assert f"| codes, plain (7·7·log2 32) | 245 | 30.6 | 0.312 | {8 * png / 245:.1f}× |" in r.sizes
    assert f"| {nll:,.0f} | {nll / 8:,.1f} | {nll / 784:.3f} |" in r.sizes
    head = f"{info.header_bytes} header + {info.payload_bytes} payload"
    ratio = f"{png / len(data):.1f}×"
    assert f"| **.vqz file** ({head}) | {8 * len(data)} | {len(data)} |" in r.sizes
    assert f"| {len(data) * 8 / 784:.3f} | {ratio} |" in r.sizes
    assert f"| the input as PNG (lossless) | {8 * png:,} | {png} |" in r.sizes
    # JPEG and WebP: the quality closest to the whole file's size, as the codec finds it
    assert f"matched on whole files: {len(data)} bytes" in r.sizes
    for fmt, shown in (("jpeg", r.jpeg), ("webp", r.webp)):
        sm = compare.match_size(x[0], len(data), fmt)
        assert f"| {sm.quality} | {sm.file_bytes} | {sm.data_bytes} |" in r.sizes
        assert np.array_equal(np.asarray(shown), np.asarray(images.enlarge(sm.image, 256)))
    # ... or the payload against their data without headers
    r2 = h.codec.compress(digit(prior_models), "mnist", "without headers")
    assert f"without headers: {info.payload_bytes} bytes" in r2.sizes.replace(
        "payload / entropy-coded data", "without headers"
    )
    sm = compare.match_size(x[0], info.payload_bytes, "jpeg", headerless=True)
    assert f"| {sm.quality} | {sm.file_bytes} | {sm.data_bytes} |" in r2.sizes
    assert Path(r2.vqz).read_bytes() == data  # the file itself does not depend on the match


def test_compress_reads_the_shown_input_back_exactly(h, prior_models, tmp_path):
    """The panel compresses the Input image the tab shows (enlarged 9x): the same file as
    from the original upload, and the decoded image is the reconstruction."""
    rec = h.reconstruct.image(digit(prior_models, 2), "mnist")
    shown = tmp_path / "shown.png"
    rec.original.save(shown)
    a = Path(h.codec.compress(digit(prior_models, 2), "mnist").vqz).read_bytes()
    b = Path(h.codec.compress(str(shown), "mnist").vqz).read_bytes()
    assert a == b
    d = h.codec.decompress(h.codec.compress(str(shown), "mnist").vqz, "mnist")
    assert np.array_equal(np.asarray(d.image), np.asarray(rec.reconstruction))
    assert re.search(r"class: (none|[a-z]+)\.", d.details) and "7×7 codes" in d.details


def thumbnail(models, tmp_path, name="00.png") -> str:
    """A cifar10 example at the model's own size (32 x 32)."""
    path = tmp_path / f"thumb-{name}"
    Image.open(models.examples / "cifar10" / name).convert("RGB").resize((32, 32)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def plain_h(plain_models, tmp_path_factory):
    """Handlers over models with no prior of either kind."""
    return explorer.Handlers(plain_models.models, plain_models.examples,
                             cache_dir=tmp_path_factory.mktemp("plain-cache"))  # fmt: skip


def test_a_model_without_a_prior_says_so_and_the_rest_works(
    plain_h, h, prior_models, plain_models, tmp_path
):
    r = plain_h.codec.compress(thumbnail(plain_models, tmp_path), "cifar10")
    assert r.vqz is None and "has no prior" in r.sizes
    assert "matched on whole files: 40 bytes" in r.sizes  # the plain 8·8·5 bits
    assert r.jpeg.size == r.webp.size == (256, 256)
    example = str(plain_models.examples / "cifar10" / "00.png")
    assert plain_h.reconstruct.image(example, "cifar10", "thumbnail").bits == 320.0
    mnist_file = h.codec.compress(digit(prior_models), "mnist").vqz
    with pytest.raises(gr.Error, match="no prior"):
        h.codec.decompress(mnist_file, "cifar10")


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda good: good[:-3], "corrupted or truncated|not match"),
        (lambda good: good[:3], "truncated"),
        (lambda good: good[:5], "truncated"),
        (lambda good: good[:4] + bytes(b ^ 0x55 for b in good[4:]), "corrupted|checksum"),
        (lambda good: b"GIF89a" + bytes(40), "not a .vqz file"),
        (lambda good: b"", "not a .vqz file"),
        (lambda good: b"\xa7" + good[1:], "version 7 is newer"),
        (lambda good: b"\xa2" + bytes(MAX_VQZ_BYTES + 10), f"at most {MAX_VQZ_BYTES // 1024} kB"),
    ],
)
def test_damaged_garbage_and_oversized_files_are_clear_errors(
    h, prior_models, tmp_path, make, words
):
    good = Path(h.codec.compress(digit(prior_models), "mnist").vqz).read_bytes()
    bad = tmp_path / "bad.vqz"
    bad.write_bytes(make(good))
    with pytest.raises(gr.Error, match=words):
        h.codec.decompress(str(bad), "mnist")


def test_a_one_pass_file_decodes_in_the_app_and_says_so(h, prior_models, tmp_path):
    m = h.models.get("mnist")
    x = inputs.model_input(m, digit(prior_models), announce=False)
    prior = vqvae.load_prior(prior_models.models / "mnist", model=m.model)
    (f,) = codec.compress(m.model, prior, x, 3, one_pass=True)
    path = tmp_path / "one.vqz"
    path.write_bytes(f)
    d = h.codec.decompress(str(path), "mnist")
    assert f"Decoded a {len(f)}-byte file (format 5, coded in one pass;" in d.details
    assert d.details.endswith(f"class: {prior.config.class_name(3)}.")


def test_a_file_for_another_model_is_refused_with_its_reason(h, prior_models):
    f = h.codec.compress(digit(prior_models), "other").vqz
    with pytest.raises(gr.Error, match="cannot be decoded with model 'mnist'.*another VQ-VAE") as e:
        h.codec.decompress(f, "mnist")
    # (one id names the pair: decoding the file tells that its VQ-VAE is another)
    assert (
        "it was coded with other's VQ-VAE and prior (decoding it shows: made with another "
        "VQ-VAE): choose other." in str(e.value)
    )
    # garbage belongs to no model: no such hint
    with pytest.raises(gr.Error) as e:
        h.codec.decompress(digit(prior_models), "mnist")
    assert "it was coded with" not in str(e.value)
    assert "Decoded" in h.codec.decompress(f, "other").details


def test_a_foreign_file_names_the_model_that_made_it_or_says_none_here_did(
    h, prior_models, tmp_path
):
    """A format 2 file (4-bit ids, which two models may share) is told by its checksum; a
    file of a prior the app does not have is from another model."""
    from codec_helpers import as_version_2, make_prior
    from vqvae.prior import codebook_fingerprint

    other = h.models.get("other")
    codes = other.model.encode(images.to_model_input(Image.open(digit(prior_models)), 1, 28)[0])
    (f,) = codec.compress_codes(other.prior, codes, 3, model=other.model)
    old = as_version_2(f, other.prior, codes[0], 3, codebook_fingerprint(other.model))
    path = tmp_path / "f.vqz"
    path.write_bytes(old)
    assert "(format 2; 4 header + " in h.codec.decompress(str(path), "other").details
    with pytest.raises(gr.Error, match="coded with other's VQ-VAE and prior: choose other[.]"):
        h.codec.decompress(str(path), "mnist")
    mnist = h.models.get("mnist").model
    stranger = make_prior(num_classes=0, model=mnist, std=0.3)  # no model of the app has it
    path.write_bytes(codec.compress_codes(stranger, codes, model=mnist)[0])
    with pytest.raises(
        gr.Error, match=r"another VQ-VAE or prior .*another model than these \(other\)"
    ):
        h.codec.decompress(str(path), "mnist")


def test_bad_arguments_are_clear_errors(h, prior_models):
    with pytest.raises(gr.Error, match="match must be one of"):
        h.codec.compress(digit(prior_models), "mnist", "half")
    with pytest.raises(gr.Error, match="No image"):
        h.codec.compress(None, "mnist")
    with pytest.raises(gr.Error, match="No file"):
        h.codec.decompress(None, "mnist")
    with pytest.raises(gr.Error, match="Unknown model"):
        h.codec.decompress(digit(prior_models), "nope")


def test_compare_rates_draws_the_vqz_beside_each_format_over_its_qualities(
    h, plain_h, prior_models, plain_models, tmp_path
):
    r = h.codec.compare_rates(digit(prior_models, 4), "mnist")
    traces = {t.name: t for t in r.chart.data}
    formats = [rd.FORMAT_NAMES[f] for f in compare.available_formats()]
    assert list(traces) == [*formats, ".vqz"]
    # the .vqz point is the panel's file and the image it decodes to
    m = h.models.get("mnist")
    x = inputs.model_input(m, digit(prior_models, 4), announce=False)
    data = Path(h.codec.compress(digit(prior_models, 4), "mnist").vqz).read_bytes()
    vqz = traces[".vqz"]
    assert list(vqz.x) == [8 * len(data) / 784] and vqz.mode == "markers"
    decoded = m.model.decode(m.model.encode(x))
    assert vqz.y[0] == pytest.approx(float(vqvae.psnr(decoded, x)), abs=1e-4)
    # each format: a line over its qualities, each point a whole file of the shown input
    jpeg = traces["JPEG"]
    assert len(jpeg.x) == len(compare.QUALITIES) and jpeg.mode == "lines+markers"
    first = compare.encode_classic(x[0], "jpeg", compare.QUALITIES[0])
    assert jpeg.x[0] == 8 * len(first) / 784
    assert f"| .vqz (prior) | {8 * len(data) / 784:.3f} | {vqz.y[0]:.2f} |" in r.points
    # a thumbnail of a model without a prior: its plain codes, 8·8·5 bits
    r = plain_h.codec.compare_rates(thumbnail(plain_models, tmp_path), "cifar10")
    plain = next(t for t in r.chart.data if t.name == codec.points.PLAIN)
    assert list(plain.x) == [320 / 1024] and f"| {codec.points.PLAIN} (K=32) | 0.312 |" in r.points
    with pytest.raises(gr.Error, match="No image"):
        h.codec.compare_rates(None, "mnist")


def test_the_vqz_is_named_after_the_input_it_came_from(h, prior_models, tmp_path):
    from explorer.files import NAME_KEY, save_pil_to_cache

    assert Path(h.codec.compress(digit(prior_models, 1), "mnist").vqz).name == "01.vqz"
    # the page compresses the Input shown, which Gradio stores under the file's name
    rec = h.reconstruct.image(digit(prior_models, 2), "mnist")
    shown = save_pil_to_cache(rec.original, str(tmp_path / "gradio"), format="png")
    assert Path(shown).name == "02.png" and NAME_KEY not in Image.open(shown).info
    assert NAME_KEY in rec.original.info  # (kept for the next time it is sent)
    named = Path(h.codec.compress(shown, "mnist").vqz)
    assert named.name == "02.vqz"
    # a drawing has no name: Gradio's own
    drawn = h.reconstruct.image(np.asarray(Image.open(digit(prior_models, 2))), "mnist")
    shown = save_pil_to_cache(drawn.original, str(tmp_path / "gradio"), format="png")
    other = Path(h.codec.compress(shown, "mnist").vqz)
    assert other.name == "image.vqz" and other.read_bytes() == named.read_bytes()
    odd = tmp_path / "a photo; of (me).png"
    odd.write_bytes(Path(digit(prior_models, 2)).read_bytes())
    assert Path(h.codec.compress(str(odd), "mnist").vqz).name == "a_photo_of_me.vqz"


def test_a_prior_that_does_not_fit_its_model_counts_as_none(prior_models, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(prior_models.models / "other", models / "other")
    for name in ("prior.json", "prior.safetensors"):  # mnist's prior beside "other"
        shutil.copy(prior_models.models / "mnist" / name, models / "other" / name)
    h = explorer.Handlers(models, prior_models.examples, tmp_path / "cache")
    r = h.codec.compress(digit(prior_models), "other")
    assert r.vqz is None and "has no prior" in r.sizes


# -- through the API ---------------------------------------------------------------------------


def test_compress_and_decompress_round_trip_through_gradio_client(live_app, prior_models):
    client = live_app.client
    out = client.predict(handle_file(digit(prior_models, 1)), "mnist", api_name="/reconstruct")
    assert len(out) == 7  # /reconstruct itself is unchanged: the panel is its own event
    rec = Reconstruction(*out)
    c = Compressed(
        *client.predict(
            handle_file(digit(prior_models, 1)), "mnist", "without headers", api_name="/compress"
        )
    )
    assert Path(c.vqz).name == "01.vqz" and "**.vqz file**" in c.sizes
    assert Image.open(c.jpeg).size == Image.open(c.webp).size == (252, 252)
    d = Decompressed(*client.predict(handle_file(c.vqz), "mnist", api_name="/decompress"))
    decoded, shown = np.asarray(Image.open(d.image)), np.asarray(Image.open(rec.reconstruction))
    assert np.array_equal(decoded, shown)
    assert f"Decoded a {Path(c.vqz).stat().st_size}-byte file" in d.details
    # the shown input (an enlarged PNG) gives the same file
    again = Compressed(
        *client.predict(handle_file(rec.original), "mnist", "whole file", api_name="/compress")
    )
    assert Path(again.vqz).read_bytes() == Path(c.vqz).read_bytes()
    assert Path(rec.original).name == "01.png" and Path(again.vqz).name == "01.vqz"


def test_compare_rates_through_gradio_client(live_app, prior_models):
    out = live_app.client.predict(
        handle_file(digit(prior_models, 2)), "mnist", api_name="/compare_rates"
    )
    r = RateCurves(*out)
    figure = json.loads(r.chart["plot"])
    names = [t["name"] for t in figure["data"]]
    assert names[-1] == ".vqz" and {"JPEG", "WebP"} <= set(names)
    assert figure["layout"]["xaxis"]["type"] == "log"
    assert "| .vqz (prior) |" in r.points


def test_api_errors_are_clear(live_app, prior_models, tmp_path):
    client = live_app.client
    vqz = Compressed(
        *client.predict(handle_file(digit(prior_models)), "mnist", api_name="/compress")
    ).vqz
    with pytest.raises(AppError, match="another VQ-VAE"):
        client.predict(handle_file(vqz), "other", api_name="/decompress")
    garbage = tmp_path / "garbage.vqz"
    garbage.write_bytes(b"\x89PNG not really")
    with pytest.raises(AppError, match="not a .vqz file"):
        client.predict(handle_file(str(garbage)), "mnist", api_name="/decompress")
    big = tmp_path / "big.vqz"
    big.write_bytes(bytes(MAX_VQZ_BYTES + 10))
    with pytest.raises(AppError, match=f"at most {MAX_VQZ_BYTES // 1024} kB"):
        client.predict(handle_file(str(big)), "mnist", api_name="/decompress")
    with pytest.raises(AppError, match="no prior"):
        client.predict(handle_file(vqz), "cifar10", api_name="/decompress")
    # cifar10 has no raster prior but a grid prior: a photo (any size; a thumbnail too) is
    # coded at its size under the grid prior, at the rate asked for
    photo = str(prior_models.examples / "cifar10" / "01.png")
    rates = [r.name for r in codec.rates(vqvae.load_pretrained(prior_models.models / "cifar10"))]
    c = Compressed(*client.predict(handle_file(photo), "cifar10", "whole file", rates[0],
                                   api_name="/compress"))  # fmt: skip
    hd = codec.read_photo_header(Path(c.vqz).read_bytes())
    assert (hd.width, hd.height) == Image.open(photo).size and hd.rate.name == rates[0]
    assert "the nearest codes" in c.sizes
    # the encoder, named as the panel's radio names it
    c = Compressed(*client.predict(handle_file(photo), "cifar10", "whole file", rates[-1],
                                   ENCODERS[2], api_name="/compress"))  # fmt: skip
    assert f"latents refined {codec.REFINE_STEPS} steps" in c.sizes
    assert codec.read_photo_header(Path(c.vqz).read_bytes()).rate.name == rates[-1]
    with pytest.raises(AppError, match="choices|encoder"):
        client.predict(handle_file(photo), "cifar10", "whole file", rates[0], "fastest",
                       api_name="/compress")  # fmt: skip


@pytest.mark.parametrize(
    "api, data, words",
    [
        ("compress", [None, "mnist", "whole file", None, None], "No image"),
        ("compress", [None, "mnist", "half", None, None], "choices|match"),
        ("compress", [None, ["mnist"], "whole file", None, None], "Unknown model|choices"),
        ("compress", [None, "mnist", "whole file", None, "fastest"], "choices|encoder"),
        ("decompress", [None, "mnist"], "No file"),
    ],
)
def test_any_request_gets_a_clear_answer(live_app, api, data, words):
    msg = call_event(live_app.url, fn_index(live_app.demo, api), data)
    assert msg["success"] is False and re.search(words, msg["output"]["error"]), msg


# -- the code map, drawn fast --------------------------------------------------------------------


def code_map_drawn_text_by_text(codes, K, size):
    """code_map_image as it was first written: one draw.text per cell."""
    codes = torch.as_tensor(np.asarray(codes)).long()
    h, w = codes.shape
    cell = max(1, size // max(h, w))
    rgb = vqvae.color_code_map(codes, K).numpy()
    im = images.enlarge(rgb, cell * max(h, w))
    draw = ImageDraw.Draw(im)
    for i in range(1, h):
        draw.line([(0, i * cell), (im.width, i * cell)], fill=(255, 255, 255), width=1)
    for j in range(1, w):
        draw.line([(j * cell, 0), (j * cell, im.height)], fill=(255, 255, 255), width=1)
    if cell >= 14:
        font = images._font(max(8, min(cell // 3, 16)))
        for i in range(h):
            for j in range(w):
                r, g, b = (int(v) for v in rgb[i, j])
                ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
                xy = ((j + 0.5) * cell, (i + 0.5) * cell)
                draw.text(xy, str(int(codes[i, j])), fill=ink, font=font, anchor="mm")
    return im


@pytest.mark.parametrize(
    "h, w, K, size",
    [(7, 7, 512, 256), (8, 8, 512, 256), (7, 9, 32, 252), (3, 3, 12345, 50), (16, 16, 512, 256)],
)
def test_code_map_image_looks_as_drawn_label_by_label(h, w, K, size):
    rng = np.random.default_rng(h * w)
    for _ in range(3):
        codes = rng.integers(0, K, (h, w))
        got = images.code_map_image(codes, K, size)
        want = code_map_drawn_text_by_text(codes, K, size)
        assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))


# -- in the browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not Path(browser.CHROMIUM).exists(), reason="no Chromium")
def test_the_panel_follows_each_reconstruction_in_the_browser(live_app, prior_models):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(live_app.url)

        def sizes_say(words: str):
            page.wait_for_function(
                "w => (document.querySelector('#codec-sizes') || {}).innerText?.includes(w)",
                arg=words,
            )

        # the first example, reconstructed on page load, then its panel
        sizes_say("matched on whole files")
        page.wait_for_selector("#jpeg img")
        page.get_by_label("without headers").check()
        sizes_say("matched on payload")
        # another example: the panel follows it
        old = page.locator("#codec-sizes").inner_text()
        page.locator("#examples img").nth(3).click()
        page.wait_for_function(
            "old => document.querySelector('#codec-sizes').innerText !== old", arg=old
        )
        # decode a .vqz file
        out = live_app.client.predict(
            handle_file(digit(prior_models, 3)), "mnist", api_name="/compress"
        )
        vqz = Compressed(*out).vqz
        page.get_by_text("Decode a .vqz file").click()
        page.locator("#vqz-file input[type=file]").set_input_files(vqz)
        page.wait_for_selector("#decoded img")
        page.wait_for_function(
            "() => document.querySelector('#decoded-md').innerText.includes('Decoded a')"
        )
        # a model with a grid prior: its photo's rate and encoder, each a new file
        page.get_by_label("Model").click()
        page.get_by_role("option", name="cifar10", exact=True).click()
        sizes_say("the nearest codes")
        page.locator("#vqz-encoder").get_by_label(ENCODERS[1]).check()
        sizes_say("× their bits")
        chromium.close()


def test_concurrent_compress_calls_give_the_files_of_calls_one_at_a_time(live_app, prior_models):
    """The coder pins torch to one thread while it runs; calls that overlap (the queue runs
    CONCURRENCY at once) must still give the same bytes as calls made one after another."""
    client = live_app.client
    paths = [digit(prior_models, i) for i in range(4)]

    def vqz(path) -> bytes:
        return Path(
            Compressed(*client.predict(handle_file(path), "mnist", api_name="/compress")).vqz
        ).read_bytes()

    alone = [vqz(p) for p in paths]
    # one client each: a session holds one expensive job at a time (explorer.fairness)
    clients = [Client(live_app.url, verbose=False) for _ in range(len(paths) * 3)]
    jobs = [
        c.submit(handle_file(p), "mnist", api_name="/compress")
        for c, p in zip(clients, paths * 3, strict=True)
    ]
    together = [Path(Compressed(*job.result(timeout=120)).vqz).read_bytes() for job in jobs]
    assert together == alone * 3
    assert len(set(alone)) == 4, "four digits, four files"


@pytest.fixture(scope="module")
def hg(grid_prior_models, tmp_path_factory):
    """Handlers over models whose cifar10 has a grid prior."""
    return explorer.Handlers(grid_prior_models.models, grid_prior_models.examples,
                             cache_dir=tmp_path_factory.mktemp("cache"))  # fmt: skip


def _photo_file(tmp_path, h=45, w=61) -> str:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 5 + 1, w // 5 + 1, 3), dtype=np.uint8)
    path = tmp_path / "holiday.png"
    Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path)
    return str(path)


def test_a_photo_is_coded_at_its_size_at_the_rate_chosen(hg, tmp_path):
    """With a grid prior, a photo's .vqz is format 3 at the rate picked, named after the
    photo, and decodes through the panel's upload to the photo's size."""
    m = hg.models.get("cifar10")
    names = [r.name for r in codec.rates(m.model)]
    assert hg.select_model("cifar10").rate["choices"] == names
    assert hg.select_model("cifar10").rate["value"] == "1 stage"  # what the tab shows, coded
    assert hg.select_model("mnist").rate["visible"] is False  # no grid prior: no rates
    photo = _photo_file(tmp_path)
    sizes = []
    for name in names:
        out = Compressed(*hg.codec.compress(photo, "cifar10", rate=name))
        data = Path(out.vqz).read_bytes()
        hd = codec.read_photo_header(data)
        assert (hd.height, hd.width, hd.rate.name) == (45, 61, name)
        assert Path(out.vqz).name == "holiday.vqz" and "61×45" in out.sizes
        sizes.append(len(data))
        back = Decompressed(*hg.codec.decompress(out.vqz, "cifar10"))
        assert back.image.size == (61, 45) and "format 3" in back.details
    assert sizes[0] < sizes[-1]
    with pytest.raises(gr.Error, match="rate must be one of"):
        hg.codec.compress(photo, "cifar10", rate="eleven")
    # a thumbnail (the model's size) of a model without a raster prior: the grid prior too
    thumb = tmp_path / "thumb.png"
    Image.open(photo).resize((32, 32)).save(thumb)
    out = Compressed(*hg.codec.compress(str(thumb), "cifar10"))
    assert codec.read_photo_header(Path(out.vqz).read_bytes()).width == 32


def test_a_photo_s_codes_are_chosen_by_the_encoder_picked(hg, tmp_path):
    """Each encoder of the panel makes the file vqvae.codec makes with its settings: the
    optimised codes a smaller file than the nearest, the refined ones another file; the
    sizes table says which; every file decodes through the panel's upload."""
    assert hg.select_model("cifar10").encoder["visible"] is True
    assert hg.select_model("mnist").encoder["visible"] is False
    m = hg.models.get("cifar10")
    photo = _photo_file(tmp_path)
    x = hg.codec._coded_input(m, photo)[0]
    top = codec.rates(m.model)[-1].name
    files = []
    for name, words, rdo, refine in (
        (ENCODERS[0], "the nearest codes", 0.0, 0),
        (ENCODERS[1], "their error + 0.0001 × their bits", codec.RDO_WEIGHT, 0),
        (ENCODERS[2], "latents refined 10 steps", codec.RDO_WEIGHT, codec.REFINE_STEPS),
    ):
        out = Compressed(*hg.codec.compress(photo, "cifar10", rate=top, encoder=name))
        data = Path(out.vqz).read_bytes()
        assert words in out.sizes
        assert data == codec.compress_image(m.model, m.grid_prior, x, top_index(m), rdo=rdo,
                                            refine=refine)  # fmt: skip
        assert "format 3" in Decompressed(*hg.codec.decompress(out.vqz, "cifar10")).details
        files.append(data)
    assert len(files[1]) < len(files[0]) and files[2] != files[1]
    with pytest.raises(gr.Error, match="encoder must be one of"):
        hg.codec.compress(photo, "cifar10", rate=top, encoder="fastest")
    with pytest.raises(gr.Error, match="encoder must be one of"):  # a thumbnail's too
        hg.codec.compress(hg.models.get("mnist").examples[0], "mnist", encoder="fastest")
    with pytest.raises(gr.Error, match="encoder must be one of"):
        hg.codec.compare_rates(photo, "cifar10", "fastest")


def top_index(m) -> int:
    return len(codec.rates(m.model)) - 1


def test_the_refinement_s_steps_follow_the_photo_s_size():
    """REFINE_PIXEL_STEPS a call: all of REFINE_STEPS for a small photo, fewer for a larger
    one, shared among the files of a chart, none (said so) when not one step fits."""
    assert REFINE_PIXEL_STEPS == 6 * 512 * 512  # the figures below assume it
    assert Encoder.named(ENCODERS[2], 100 * 100).refine == codec.REFINE_STEPS
    assert Encoder.named(ENCODERS[2], 512 * 512).refine == 6
    assert Encoder.named(ENCODERS[2], 512 * 512, files=5).refine == 1
    assert Encoder.named(ENCODERS[2], 1 << 20).refine == 1
    big = Encoder.named(ENCODERS[2], 1 << 20, files=5)
    assert (big.rdo, big.refine) == (codec.RDO_WEIGHT, 0) and "too large to refine" in big.words
    assert Encoder.named(None, 100) == Encoder.named(ENCODERS[0], 100)
    assert (Encoder.named(ENCODERS[0], 100).rdo, Encoder.named(ENCODERS[0], 100).refine) == (0, 0)
    for bad in ("fastest", 3, ["nearest codes"]):
        with pytest.raises(gr.Error, match="encoder must be one of"):
            Encoder.named(bad, 100)


def test_compare_rates_charts_the_photo_the_panel_codes(hg, tmp_path):
    """The chart's .vqz points are the photo's files at every rate, at its own size."""
    photo = _photo_file(tmp_path)
    r = hg.codec.compare_rates(photo, "cifar10")
    assert "61×45" in r.chart.layout.title.text
    vqz = next(t for t in r.chart.data if t.name == ".vqz")
    files = [
        Path(Compressed(*hg.codec.compress(photo, "cifar10", rate=n.name)).vqz).read_bytes()
        for n in codec.rates(hg.models.get("cifar10").model)
    ]
    assert list(vqz.x) == pytest.approx([8 * len(f) / (61 * 45) for f in files])
    # with the optimised encoder: its curve, of the files /compress makes with it
    r = hg.codec.compare_rates(photo, "cifar10", ENCODERS[1])
    vqz = next(t for t in r.chart.data if t.name == ".vqz rdo=0.0001")
    files = [
        Path(Compressed(*hg.codec.compress(photo, "cifar10", rate=n.name,
                                           encoder=ENCODERS[1])).vqz).read_bytes()
        for n in codec.rates(hg.models.get("cifar10").model)
    ]  # fmt: skip
    assert list(vqz.x) == pytest.approx([8 * len(f) / (61 * 45) for f in files])


def test_a_photo_file_on_a_model_without_a_grid_prior_says_what_it_needs(hg, tmp_path):
    data = codec.compress_image(
        hg.models.get("cifar10").model, hg.models.get("cifar10").grid_prior,
        torch.rand(3, 20, 24),
    )  # fmt: skip
    f = tmp_path / "p.vqz"
    f.write_bytes(data)
    with pytest.raises(gr.Error, match="grid prior"):
        hg.codec.decompress(str(f), "mnist")
