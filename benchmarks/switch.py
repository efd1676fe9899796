"""How long a model switch takes on the page: ``python app.py`` in a process of its own,
headless Chromium switching the model dropdown back and forth.

    python -m benchmarks.switch                         # mnist <-> cifar10, shipped models
    python -m benchmarks.switch --models mnist cifar10 --switches 6

Per switch (after a first one that loads the second model): seconds from the press on the
model's name in the open dropdown (the page's own clock: the browser's automation before the
press is not the app's time) until the Reconstruct tab shows the new model's first example,
until no output on the page is loading any more, and the server's CPU seconds meanwhile
(from /proc: Linux only). Every
model is loaded by the first switches, so the others measure switching to a loaded model.
Target (2 CPU cores): the reconstruction within 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from tools import browser
from tools.serve import start_app, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
# Gradio marks what is loading with these; none left: the page is idle
IDLE = "() => !document.querySelector('.progress-text, .eta-bar, .meta-text-center, .loader')"
# the page's clock at the last press (the dropdown takes its choice on mousedown)
PRESS = (
    "() => { if (!window.vqPressOn) { window.vqPressOn = true; document.addEventListener("
    "'mousedown', () => { window.vqPress = performance.now(); }, true); } }"
)
NEW_SRC = (
    "old => { const i = document.querySelector('#recon img');"
    " return i && i.getAttribute('src') !== old && performance.now() - window.vqPress; }"
)
IDLE_SINCE_PRESS = f"() => ({IDLE})() && performance.now() - window.vqPress"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switch(page, name: str, pid: int) -> tuple[float, float, float]:
    """Choose model ``name`` -> (seconds from the press to its reconstruction, to an idle
    page, server CPU)."""
    old = page.locator("#recon img").first.get_attribute("src")
    page.evaluate(PRESS)
    page.get_by_label("Model").click()
    option = page.get_by_role("option", name=name, exact=True)
    option.wait_for()
    c0 = cpu_seconds(pid)
    option.click()
    shown = page.wait_for_function(NEW_SRC, arg=old, polling=10).json_value() / 1000
    idle = page.wait_for_function(IDLE_SINCE_PRESS, polling=10).json_value() / 1000
    return shown, idle, cpu_seconds(pid) - c0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", default=str(ROOT / "pretrained"))
    p.add_argument("--examples-dir", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--models", nargs=2, default=["mnist", "cifar10"], metavar="NAME")
    p.add_argument("--switches", type=int, default=6, help="switches timed, after the first")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    proc, url = start_app(args.models_dir, args.examples_dir)
    try:
        wait_until_up(url, proc)
        with sync_playwright() as pw:
            chromium = browser.launch(pw)
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#recon img")
            page.wait_for_function(IDLE)
            first, second = args.models
            cold = switch(page, second, proc.pid)
            print(f"first switch to {second} (loads it): {cold[0]:.2f} s", flush=True)
            rows = []
            for i in range(args.switches):
                time.sleep(1.0)  # what the page fetches after the idle marks go
                name = first if i % 2 == 0 else second
                rows.append(switch(page, name, proc.pid))
                shown, idle, cpu = rows[-1]
                print(f"to {name}: shown {shown:.2f} s, idle {idle:.2f} s, server CPU {cpu:.2f} s")
            chromium.close()
    finally:
        stop(proc)
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median of {len(rows)} switches to a loaded model: reconstruction shown {med[0]:.2f} s, "
        f"page idle {med[1]:.2f} s, server CPU {med[2]:.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
