"""Each tab's main flow in headless Chromium (Playwright), against a live server with tiny
models. Skipped when Chromium or Playwright is missing."""

from __future__ import annotations

import io
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from app_helpers import digits
from tools import browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(browser.CHROMIUM), reason=f"no Chromium at {browser.CHROMIUM}"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page(live_app):
    """One page of the live app (its mnist model has a prior) in headless Chromium."""
    with playwright_api.sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)  # generous: CI machines may be busy
        page.goto(live_app.url)
        yield page
        chromium.close()


def src(page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def wait_src_change(page, selector: str, old: str):
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel);"
        " return i && i.getAttribute('src') && i.getAttribute('src') !== old; }",
        arg=[selector, old],
    )


def test_reconstruct_tab(page, live_app, tmp_path):
    page.wait_for_selector("#recon img")  # the first example, reconstructed on page load
    # upload a dark-on-light digit: the app inverts it and shows the same PSNR as a direct call
    path = tmp_path / "upload.png"
    Image.fromarray(255 - digits(4)[3]).save(path)
    expected = live_app.handlers.reconstruct.image(str(path), "mnist").psnr
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.locator("#recon-btn").click()
    page.wait_for_function(
        "v => document.querySelector('#psnr input').value == v", arg=str(expected)
    )
    assert page.locator("#codemap img").count() == 1
    # draw a stroke on the drawing pad: it reconstructs as you draw
    before = src(page, "#recon img")
    page.get_by_role("tab", name="Draw").click()
    page.get_by_role("button", name="Brush").click()
    box = page.locator("canvas").first.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x, box["y"] + box["height"] * (0.2 + 0.06 * i), steps=2)
    page.mouse.up()
    wait_src_change(page, "#recon img", before)
    page.get_by_role("tab", name="Upload").click()


def test_codebook_tab(page):
    page.get_by_role("tab", name="Codebook").click()
    page.wait_for_selector("#codebook-plot .js-plotly-plot")
    page.wait_for_selector("#atlas img")
    box = page.locator("#pick input")
    box.fill("5")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#pick-md').innerText.includes('Code 5')")
    assert "Code 5" in page.locator("#pick-md").inner_text()
    assert page.locator("#atlas img").count() == 32, "one tile per code"
    assert "codes" in page.locator("#codebook-summary").inner_text()


def test_edit_tab(page):
    page.get_by_role("tab", name="Edit codes").click()
    page.wait_for_selector("#edit-map img")
    page.wait_for_selector("#edit-img img")
    before = src(page, "#edit-img img")
    page.locator("#paint-code input").fill("3")
    page.locator("#paint-code input").press("Enter")
    img = page.locator("#edit-map img").first
    box = img.bounding_box()
    # paint four cells near the centre, so the decoded image surely changes
    for dx, dy in ((0.45, 0.45), (0.55, 0.45), (0.45, 0.55), (0.55, 0.55)):
        img.click(position={"x": box["width"] * dx, "y": box["height"] * dy})
    wait_src_change(page, "#edit-img img", before)
    assert src(page, "#edit-img img") != before, "the painted grid is decoded again"
    assert "bits" in page.locator("#edit-bits").inner_text()


def test_interpolate_tab(page):
    page.get_by_role("tab", name="Interpolate").click()
    page.wait_for_selector("#gif img")  # made when the tab opens, from the first two examples
    before = src(page, "#gif img")
    page.get_by_label("codebook").check()
    page.locator("#interp-btn").click()
    wait_src_change(page, "#gif img", before)
    assert ".gif" in src(page, "#gif img")


def test_sample_tab_and_resample(page):
    page.get_by_role("tab", name="Sample").click()
    page.wait_for_function(
        "() => document.querySelector('#sample-note').innerText.includes('10 classes')"
    )
    page.locator("#sample-btn").click()
    page.wait_for_function("() => document.querySelectorAll('#samples img').length == 16")
    assert "16 samples" in page.locator("#sample-info").inner_text()
    # a picked sample opens in Edit codes, with its bits under the prior
    page.locator("#samples img").nth(3).click()
    page.wait_for_selector("[role=tab][aria-selected=true]:has-text('Edit codes')")
    page.wait_for_selector("#edit-img img")
    page.wait_for_function(
        "() => document.querySelector('#edit-bits').innerText.includes('Under the prior')"
    )
    # mark cells in the lower half (the map is centred in its box), resample them
    page.get_by_label("mark", exact=True).check()
    img = page.locator("#mark-map img").first
    img.wait_for()
    box = img.bounding_box()
    for dx, dy in ((0.4, 0.65), (0.5, 0.65), (0.6, 0.65), (0.5, 0.75)):
        old = src(page, "#mark-map img")
        img.click(position={"x": box["width"] * dx, "y": box["height"] * dy})
        wait_src_change(page, "#mark-map img", old)
    before = src(page, "#edit-img img")
    page.locator("#resample-btn").click()
    wait_src_change(page, "#edit-img img", before)
    page.locator("#surprise input").check()
    page.wait_for_function("() => document.querySelector('#edit-bits').innerText.includes('bits')")
    assert "Under the prior" in page.locator("#edit-bits").inner_text()
    assert src(page, "#edit-img img") != before, "the resampled grid is decoded again"


def test_brush_on_a_photos_code_map(page, live_app):
    """A colour model reads the example at its own size (not its thumbnail grid): its codes
    open on the photo's code map, where a click paints a brush of cells and the decoded
    picture changes."""
    page.locator("input[role=listbox], .wrap input").first.click()
    page.get_by_role("option", name="cifar10", exact=True).click()
    page.get_by_role("tab", name="Edit codes").click()
    page.wait_for_selector("#photo-map img")
    page.wait_for_function(
        "() => document.querySelector('#paint-note').innerText.includes('click the map')"
    )
    page.locator("#paint-code input").fill("31")
    page.locator("#paint-code input").press("Enter")
    before = src(page, "#edit-img img")
    img = page.locator("#photo-map img").first
    box = img.bounding_box()
    img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    wait_src_change(page, "#edit-img img", before)
    page.wait_for_function(
        "() => document.querySelector('#paint-note').innerText.includes('Painted code 31')"
    )
    assert not page.locator("#edit-map").is_visible(), "the thumbnail map is hidden"

    def pixels(url: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(httpx.get(url).content)), float)

    old, new = pixels(before), pixels(src(page, "#edit-img img"))
    assert old.shape == new.shape and np.abs(old - new).max() > 0, "the picture changed"

    # a drag paints along its path (one event: the click it ends in paints nothing more)
    def drag(a, b, note):
        old_map = src(page, "#photo-map img")
        at = img.bounding_box()
        page.mouse.move(at["x"] + at["width"] * a[0], at["y"] + at["height"] * a[1])
        page.mouse.down()
        page.mouse.move(at["x"] + at["width"] * b[0], at["y"] + at["height"] * b[1], steps=12)
        page.mouse.up()
        wait_src_change(page, "#photo-map img", old_map)
        page.wait_for_function(
            f"() => document.querySelector('#paint-note').innerText.includes({note!r})"
        )

    drag((0.1, 0.8), (0.9, 0.8), "brush of radius 2 dragged")
    new = pixels(src(page, "#edit-img img"))
    page.get_by_label("Rectangle: drag, or click two corners").check()
    drag((0.6, 0.1), (0.8, 0.3), "dragged rectangle")
    page.wait_for_timeout(1500)  # a leaked click would now set a first corner
    assert "dragged rectangle" in page.locator("#paint-note").inner_text()
    page.get_by_label("Brush", exact=True).check()
    # mark a rectangle (two corners) and resample it with the model's grid prior
    page.get_by_label("Mark a rectangle to resample: drag, or click two corners").check()
    for dx, dy in ((0.2, 0.2), (0.4, 0.4)):
        old_map = src(page, "#photo-map img")
        img.click(position={"x": box["width"] * dx, "y": box["height"] * dy})
        wait_src_change(page, "#photo-map img", old_map)
    page.wait_for_function(
        "() => document.querySelector('#paint-note').innerText.includes('Marked')"
    )
    painted = src(page, "#edit-img img")
    page.locator("#photo-resample").click()
    wait_src_change(page, "#edit-img img", painted)
    assert "Resampled" in page.locator("#paint-note").inner_text()
    resampled = pixels(src(page, "#edit-img img"))
    assert resampled.shape == new.shape and np.abs(resampled - new).max() > 0
