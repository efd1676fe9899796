"""The Reconstruct tab's linked views and states in headless Chromium: a photo reconstructed
at its own size on the colour model, the cell under the pointer outlined on all three
pictures, a click on its code map, and the inspector naming that cell's code, the cell
outlined on the input, the reconstruction and the code map; an upload
that fails keeps the last result and says why once. Skipped without Chromium or Playwright."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from PIL import Image

from tools import browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(browser.CHROMIUM), reason=f"no Chromium at {browser.CHROMIUM}"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def app_page(live_app):
    """A page of the live app in a Chromium of its own, its first example reconstructed."""
    with playwright_api.sync_playwright() as p:
        chromium = browser.launch(p)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(live_app.url)
            page.wait_for_selector("#recon img")
            yield page
        finally:
            chromium.close()


def test_a_click_on_a_photos_code_map_inspects_that_cell(live_app, tmp_path):
    # 76 x 44 pixels: 11 x 19 cells of 4 px, the centre (38, 22) inside cell (5, 9)
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (44, 76, 3), dtype=np.uint8)).save(path)
    out = live_app.handlers.reconstruct.image(str(path), "cifar10", announce=False)
    code = int(out.grid.to_numpy()[5, 9])
    with app_page(live_app) as page:
        page.get_by_label("Model").click()
        page.get_by_role("option", name="cifar10", exact=True).click()
        page.wait_for_function(
            "() => document.querySelector('#model-card').innerText.includes('cifar10')"
        )
        page.locator("#input-image input[type=file]").set_input_files(str(path))
        page.locator("#recon-btn").click()
        page.wait_for_function(
            "v => document.querySelector('#psnr input').value == v", arg=str(out.psnr)
        )
        # the codec panel codes the new photo as an event of its own: let the page settle
        # (a click while its outputs re-render can be lost)
        page.wait_for_function(
            "() => document.querySelector('#codec-sizes').innerText.includes('76×44')"
        )
        # the pointer over the reconstruction outlines the cell under it on all three (once
        # the page has the new grid's geometry: an event of its own after the reconstruction)
        page.wait_for_function("() => window.vqGrid && window.vqGrid.cells.join() == '11,19'")
        recon = page.locator("#recon img").first
        shown = recon.bounding_box()
        page.mouse.move(shown["x"] + shown["width"] / 2, shown["y"] + shown["height"] / 2)
        # read in the same step as they appear: a later re-render of a picture may redraw them
        cells = page.wait_for_function(
            "() => { const h = [...document.querySelectorAll('.cell-hover')];"
            " return h.length == 3 && h.map(e => e.getAttribute('data-cell')); }"
        ).json_value()
        assert set(cells) == {"5,9"}
        assert recon.get_attribute("title") == "cell (5, 9): click to inspect it"
        img = page.locator("#codemap img").first
        box = img.bounding_box()
        img.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
        page.wait_for_function(
            "t => document.querySelector('#cell-why').innerText.includes(t)",
            arg=f"Cell (5, 9): code {code}",
        )
        assert f"Code {code}" in page.locator("#cell-md").inner_text()
        outlines = page.locator(".cell-outline")
        assert outlines.count() == 3, "on the input, the reconstruction and the code map"
        assert {outlines.nth(i).get_attribute("data-cell") for i in range(3)} == {"5,9"}
        # the outline sits over the cell: 4 of 76 px wide, drawn at the picture's scale
        shown = img.bounding_box()
        outline = page.locator("#codemap .cell-outline").bounding_box()
        scale = min(shown["width"] / 76, shown["height"] / 44)
        assert abs(outline["width"] - 4 * scale) <= 5
        assert abs(outline["x"] - (shown["x"] + shown["width"] / 2 - 2 * scale)) <= 6


def test_an_error_keeps_the_last_result_and_says_why_once(live_app, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with app_page(live_app) as page:
        page.wait_for_function("() => document.querySelector('#psnr input').value !== ''")
        shown = page.locator("#recon img").first.get_attribute("src")
        psnr = page.locator("#psnr input").input_value()
        page.locator("#input-image input[type=file]").set_input_files(str(bad))
        page.wait_for_selector(".toast-body")
        assert page.locator(".toast-body").count() == 1
        assert "not an image" in page.locator(".toast-body").inner_text()
        errors = page.locator(".wrap .error")
        assert not any(errors.nth(i).is_visible() for i in range(errors.count())), (
            "no red Error pill over the outputs"
        )
        assert page.locator("#recon img").first.get_attribute("src") == shown
        assert page.locator("#recon img").first.is_visible()
        assert page.locator("#psnr input").input_value() == psnr


def test_a_click_on_a_code_of_the_umap_plot_inspects_it(live_app):
    with app_page(live_app) as page:
        page.get_by_role("tab", name="Codebook").click()
        page.wait_for_function(
            "() => { const g = document.querySelector('#codebook-plot .js-plotly-plot');"
            " return g && g.dataset.inspects; }"
        )
        # where Plotly drew code 11 (trace 0 holds every code, in order)
        x, y = page.evaluate(
            "() => { const g = document.querySelector('#codebook-plot .js-plotly-plot');"
            " const r = g.querySelector('.nsewdrag').getBoundingClientRect();"
            " const d = g._fullData[0], L = g._fullLayout;"
            " return [r.left + L.xaxis.l2p(d.x[11]), r.top + L.yaxis.l2p(d.y[11])]; }"
        )
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        page.wait_for_function(
            "() => document.querySelector('#pick-md').innerText.includes('Code 11')"
        )
        assert page.locator("#pick input").input_value() == "11"
