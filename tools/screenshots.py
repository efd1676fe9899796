"""Screenshots of the app's tabs for the README: assets/screenshots/<tab>.png (Sample only for
a model with a prior).

    python -m tools.screenshots                        # the shipped models in pretrained/
    python -m tools.screenshots --models-dir /tmp/m --examples-dir /tmp/ex --out /tmp/shots

Starts ``python app.py`` on a free port, drives it in headless Chromium (Playwright; needs
/usr/bin/chromium, e.g. ``apt-get install chromium``) and stops it again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import browser
from tools.serve import start_app, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", default=str(ROOT / "pretrained"))
    p.add_argument("--examples-dir", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--model", default=None, help="model to show (default: the first)")
    p.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    p.add_argument("--chromium", default=browser.CHROMIUM)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(args.models_dir, args.examples_dir, quiet=False)
    try:
        wait_until_up(url, proc)
        with sync_playwright() as pw:
            chromium = browser.launch(pw, args.chromium)
            page = chromium.new_page(
                viewport={"width": 1380, "height": 1000}, device_scale_factor=1
            )
            page.set_default_timeout(60_000)
            page.goto(url)
            if args.model:
                page.locator("input[role=listbox], .wrap input").first.click()
                page.get_by_role("option", name=args.model, exact=True).click()
            page.wait_for_selector("#recon img")
            # the codec panel is its own event after the reconstruction: wait for its table
            # and for JPEG / WebP, so the shot shows the panel filled in, not queued
            page.wait_for_function(
                "() => document.querySelector('#codec-sizes')?.innerText.includes('.vqz')"
            )
            page.wait_for_selector("#jpeg img")
            page.wait_for_selector("#webp img")
            page.wait_for_timeout(1500)
            shot(page, out / "reconstruct.png")

            page.get_by_role("tab", name="Codebook").click()
            page.wait_for_selector("#codebook-plot .js-plotly-plot")
            page.wait_for_selector("#atlas img")
            page.wait_for_timeout(2500)  # thumbnails
            shot(page, out / "codebook.png")

            page.get_by_role("tab", name="Edit codes").click()
            # a thumbnail's grid opens on the cell map, a photo's on its code map (brush)
            page.wait_for_selector("#edit-map img:visible, #photo-map img:visible")
            photo = page.locator("#photo-map img").first.is_visible()
            page.wait_for_selector("#edit-img img")
            old = page.locator("#edit-img img").get_attribute("src")
            page.locator("#edit-atlas img").nth(3).click()  # pick the 4th most used code
            page.wait_for_timeout(500)
            img = page.locator("#photo-map img" if photo else "#edit-map img").first
            box = img.bounding_box()
            for dx in (0.3, 0.45, 0.6):  # paint a short horizontal stroke of cells (brushes)
                img.click(position={"x": box["width"] * dx, "y": box["height"] * 0.5})
                page.wait_for_timeout(1500 if photo else 400)
            page.wait_for_function(
                "old => document.querySelector('#edit-img img').getAttribute('src') !== old",
                arg=old,
            )
            page.wait_for_timeout(1000)
            shot(page, out / "edit.png")

            page.get_by_role("tab", name="Interpolate").click()
            page.wait_for_selector("#gif img")
            page.wait_for_selector("#strip img")
            page.wait_for_timeout(1500)
            shot(page, out / "interpolate.png")

            page.get_by_role("tab", name="Sample").click()
            page.wait_for_function("() => document.querySelector('#sample-note').innerText")
            if "has no prior" in page.locator("#sample-note").inner_text():
                print("no Sample screenshot: the model has no prior")
            else:
                page.locator("#sample-btn").click()
                page.wait_for_function(
                    "() => document.querySelectorAll('#samples img').length == 16"
                )
                page.wait_for_timeout(1500)
                shot(page, out / "sample.png")
            chromium.close()
    finally:
        stop(proc)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")


def shot(page, path: Path, max_height: int = 1250) -> None:
    """The page from the top, cut at ``max_height`` px (the code atlas is long)."""
    height = min(max_height, page.evaluate("document.documentElement.scrollHeight"))
    page.screenshot(
        path=str(path),
        full_page=True,
        clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height},
    )


if __name__ == "__main__":
    main()
