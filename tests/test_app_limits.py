"""What one request and one session may cost the server, sent as a hostile client would (raw
HTTP, any event by fn_index): request bodies over the cap refused before parsing, images
checked at their header by every route, session state bounded and dropped once no page
holds it, and the handlers' own messages for values Gradio would refuse generically."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import uuid
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

import explorer
from app_helpers import call_event, fn_index
from explorer import limits, settings
from tools.ports import free_port

MB = 2**20


def rss_mb() -> tuple[float, float]:
    """(resident, peak resident) MB of this process, where the test servers run."""
    s = Path("/proc/self/status").read_text()
    rss, hwm = (int(re.search(k + r":\s+(\d+)", s).group(1)) for k in ("VmRSS", "VmHWM"))
    return rss / 1024, hwm / 1024


def reset_peak() -> float:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return rss_mb()[0]


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="memory is read from Linux's /proc"
)


def join(url: str, body: bytes | object, session: str | None = None, **kw) -> httpx.Response:
    return httpx.post(
        url + "gradio_api/queue/join",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
        **kw,
    )


def event_body(fn: int, data: list, session: str | None = None) -> bytes:
    session = session or uuid.uuid4().hex
    return json.dumps({"data": data, "fn_index": fn, "session_hash": session}).encode()


def table(rows: int, cols: int, value=1) -> dict:
    return {"headers": [], "data": [[value] * cols for _ in range(rows)]}


# -- request bodies ------------------------------------------------------------------------


def test_body_over_the_cap_is_refused_before_it_is_parsed(live_app):
    """A 45 MB /edit body once cost +475 MB and stalled every user's /queue/status for 6 s."""
    url = live_app.url
    big = event_body(fn_index(live_app.demo, "edit"), ["mnist", table(5000, 3000, 0)])
    assert len(big) > 40 * MB
    status: list[float] = []
    done = threading.Event()

    def poll():  # another user, meanwhile
        while not done.is_set():
            t = time.perf_counter()
            httpx.get(url + "gradio_api/queue/status", timeout=30)
            status.append(time.perf_counter() - t)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        t = time.perf_counter()
        r = join(url, big)  # Content-Length says it all
        declared = time.perf_counter() - t
        t = time.perf_counter()
        chunked = join(url, (big[i : i + 65536] for i in range(0, len(big), 65536)))
        counted = time.perf_counter() - t
    finally:
        done.set()
        poller.join()
    assert r.status_code == 413 and "too large" in r.text
    assert chunked.status_code == 413
    # (before: 7.5 s, /queue/status stalled for seconds; the bounds allow for a machine
    # shared with other jobs, as tests/test_images.py does)
    assert declared < 3 and counted < 3, (declared, counted)
    assert max(status) < 1.0, f"/queue/status took {max(status):.2f} s meanwhile"


def test_bodies_under_the_cap_and_uploads_pass(live_app):
    url = live_app.url
    # just under the cap: parsed and answered by the handler
    near = table(600, 500)
    body = event_body(fn_index(live_app.demo, "edit"), ["mnist", near])
    assert settings.MAX_BODY_BYTES * 0.8 < len(body) <= settings.MAX_BODY_BYTES
    assert join(url, body).status_code == 200
    # file uploads keep Gradio's own limit (max_file_size), above the body cap
    up = httpx.post(
        url + "gradio_api/upload", files={"files": ("x.bin", bytes(2 * MB))}, timeout=30
    )
    assert up.status_code == 200, up.text
    # multipart elsewhere counts as any other body
    other = httpx.post(
        url + "gradio_api/queue/join", files={"files": ("x.bin", bytes(2 * MB))}, timeout=30
    )
    assert other.status_code == 413


def test_a_huge_marks_table_fails_fast(live_app):
    """A 3000 x 3000 marks table took 7.3 s; now the body cap refuses it at once, and the
    table parser refuses an oversized table from its row count (nothing built)."""
    from explorer import inputs

    grid = table(7, 7, 0)
    fn = next(i for i, f in live_app.demo.fns.items() if (f.api_name or "").startswith("edit_ov"))
    body = event_body(fn, ["mnist", grid, table(3000, 3000), False])
    t = time.perf_counter()
    r = join(live_app.url, body)
    assert r.status_code == 413 and time.perf_counter() - t < 1.5
    m = live_app.handlers.models.get("mnist")
    marks = table(3000, 3000)
    t = time.perf_counter()
    with pytest.raises(gr.Error, match="7x7"):
        inputs.marks(m, marks)
    assert (inputs.marks(m, marks, strict=False) == 0).all()
    assert time.perf_counter() - t < 0.1


# -- images: one check at the header, by every route -----------------------------------------


def png(side: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, side).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 9990 x 9990 PNG: ~100 kB on disk, 100 MB as 8-bit grey (400 MB as RGBA)."""
    return png((9990, 9990))


def data_url(blob: bytes) -> dict:
    return {
        "url": "data:image/png;base64," + base64.b64encode(blob).decode(),
        "meta": {"_type": "gradio.FileData"},
    }


def costly(call) -> tuple[dict, float, float]:
    """(the event's final message, seconds, extra peak MB of this process)."""
    base = reset_peak()
    t = time.perf_counter()
    msg = call()
    return msg, time.perf_counter() - t, rss_mb()[1] - base


@needs_proc
def test_data_url_images_are_checked_at_the_header(live_app, bomb):
    """Gradio decodes a data URL image itself (9 s and +920 MB for this one on /reconstruct,
    24 s and +1.2 GB as both images of interpolate_example, which then succeeded)."""
    url, demo = live_app.url, live_app.demo
    msg, seconds, mb = costly(
        lambda: call_event(url, fn_index(demo, "reconstruct"), [data_url(bomb), "mnist", "own"])
    )
    assert msg["success"] is False and "too large" in msg["output"]["error"], msg
    assert seconds < 1.5 and mb < 300, (seconds, mb)
    msg, seconds, mb = costly(
        lambda: call_event(
            url,
            fn_index(demo, "interpolate_example"),
            ["mnist", "A", data_url(bomb), data_url(bomb)],
            {"index": 0, "value": None},
        )
    )
    assert seconds < 1.5 and mb < 300, (seconds, mb)
    # an honest data URL still works, as Gradio's own client may send one
    small = (live_app.examples / "mnist" / "00.png").read_bytes()
    msg = call_event(url, fn_index(demo, "reconstruct"), [data_url(small), "mnist", "own"])
    assert msg["success"] is True, msg
    bad = {"url": "data:image/png;base64,@@@", "meta": {"_type": "gradio.FileData"}}
    msg = call_event(url, fn_index(demo, "reconstruct"), [bad, "mnist", "own"])
    assert msg["success"] is False and re.search("empty|base64", msg["output"]["error"]), msg


def upload(url: str, blob: bytes, name: str = "c.png") -> dict:
    r = httpx.post(
        url + "gradio_api/upload", files={"files": (name, blob, "image/png")}, timeout=60
    )
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


@needs_proc
def test_drawing_pad_value_is_checked_at_the_header(live_app):
    """The pad's composite sent as an uploaded file with the event (not as a blob): a 99.8 MP
    PNG cost +1 GB and 2.3 s before it was refused."""
    url, fn = live_app.url, fn_index(live_app.demo, "reconstruct_drawing")
    huge = upload(url, png((9990, 9990), "RGBA"))
    value = {"background": None, "layers": [huge, huge], "composite": huge, "id": None}
    msg, seconds, mb = costly(lambda: call_event(url, fn, [value, "mnist"]))
    assert msg["success"] is False and "too large" in msg["output"]["error"], msg
    assert seconds < 1.5 and mb < 300, (seconds, mb)
    # layers and background are never read, so never decoded
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150] = (0, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(canvas, "RGBA").save(buf, "PNG")
    drawing = upload(url, buf.getvalue())
    value = {"background": huge, "layers": [huge], "composite": drawing, "id": None}
    msg, seconds, mb = costly(lambda: call_event(url, fn, [value, "mnist"]))
    assert msg["success"] is True and msg["output"]["data"][4] >= 1, msg
    assert seconds < 1.5 and mb < 300, (seconds, mb)


# -- session state ---------------------------------------------------------------------------


@pytest.fixture
def quick_sweep_app(plain_models, tmp_path):
    """An app whose idle sessions are dropped after 1 s (checked every 0.25 s)."""
    demo, handlers = explorer.build_app(plain_models.models, plain_models.examples, tmp_path)
    port = free_port()
    explorer.launch(
        demo,
        handlers,
        "127.0.0.1",
        port,
        prevent_thread_lock=True,
        quiet=True,
        app_kwargs=limits.app_kwargs(idle=1.0, every=0.25),
    )
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def wait_until(cond, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_reset_grid_is_checked_before_it_is_kept(quick_sweep_app):
    demo, url = quick_sweep_app
    holder, original = demo.server_app.state_holder, None
    for block in demo.fns[fn_index(demo, "reset")].inputs:
        if isinstance(block, gr.State):
            original = block
    session = uuid.uuid4().hex
    fn = fn_index(demo, "edit_original")
    msg = call_event(url, fn, ["mnist", table(3000, 20)], session=session)
    assert msg["success"] is False and "7x7" in msg["output"]["error"], msg
    assert holder[session].state_data.get(original._id) is None, "nothing kept"
    msg = call_event(url, fn, ["mnist", table(7, 7, 3)], session=session)
    assert msg["success"] is True, msg
    kept = holder[session].state_data[original._id]
    assert isinstance(kept, np.ndarray) and kept.shape == (7, 7) and (kept == 3).all()
    msg = call_event(url, fn_index(demo, "reset"), ["mnist", None], session=session)
    assert msg["success"] is True and msg["output"]["data"][0]["data"][0][0] == 3, msg


SERVER = """
import sys, time
import explorer
from explorer import limits
demo, h = explorer.build_app(sys.argv[1], sys.argv[2], sys.argv[3])
explorer.launch(demo, h, "127.0.0.1", int(sys.argv[4]), prevent_thread_lock=True, quiet=True,
                app_kwargs=limits.app_kwargs(idle=1.0, every=0.25))
print("READY", flush=True)
while True:
    print(len(demo.server_app.state_holder.session_data), flush=True)
    time.sleep(0.5)
"""


@needs_proc
@pytest.mark.slow
def test_hostile_state_requests_are_dropped_with_their_sessions(plain_models, tmp_path):
    """Each request in a new session, never read, no page: Gradio kept them all (12 tables
    of 3000 x 2000: +1.2 GB). 200 requests, each as large as the body cap allows (~1 MB);
    the server runs in its own process, whose memory is read."""
    import subprocess
    import sys

    port = free_port()
    args = [plain_models.models, plain_models.examples, tmp_path, port]
    root = Path(__file__).parent.parent
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
    )
    sessions = iter(server.stdout)

    def server_rss() -> float:
        s = Path(f"/proc/{server.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", s).group(1)) / 1024

    def settled() -> bool:  # no session kept, twice in a row (a sweep has run since)
        return next(sessions).strip() == "0" and next(sessions).strip() == "0"

    try:
        assert next(line for line in sessions if line.startswith("READY"))
        url = f"http://127.0.0.1:{port}/"
        fn = httpx.get(url + "config", timeout=30).json()["dependencies"]
        fn = next(i for i, d in enumerate(fn) if d.get("api_name") == "edit_original")
        body = event_body(fn, ["mnist", table(600, 500)], session="x" * 32)
        assert len(body) <= settings.MAX_BODY_BYTES

        def send(n: int):
            with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as http:
                for _ in range(n):
                    one = body.replace(b"x" * 32, uuid.uuid4().hex.encode())
                    r = http.post(url + "gradio_api/queue/join", content=one)
                    assert r.status_code == 200

        send(5)  # warm: what the first events import and cache is no session's
        assert wait_until(settled, 60)
        start = server_rss()
        send(200)
        peak = server_rss()
        assert wait_until(settled, 120)
        # freed memory goes back to the system at the sweeps after the sessions are dropped;
        # what stays is the allocator's: +56 to +108 MB over five runs on the 2-core machine
        # (this code and the code before it alike), against +1.2 GB when sessions were kept
        wait_until(lambda: server_rss() - start < 100, 60)
        extra = server_rss() - start
        print(f"server RSS {start:.0f} MB, {peak:.0f} after 200 requests, +{extra:.0f} at the end")
        assert extra < 200, f"+{extra:.0f} MB after the sessions were dropped"
    finally:
        server.kill()
        server.wait()


def test_a_session_with_a_live_page_is_kept(quick_sweep_app):
    demo, url = quick_sweep_app
    holder = demo.server_app.state_holder
    session = uuid.uuid4().hex
    closed = threading.Event()

    def heartbeat():  # what a page holds open while it is shown
        with httpx.stream("GET", url + f"gradio_api/heartbeat/{session}", timeout=60) as r:
            for _ in r.iter_lines():
                if closed.is_set():
                    return

    page = threading.Thread(target=heartbeat)
    page.start()
    try:
        msg = call_event(
            url, fn_index(demo, "edit_original"), ["mnist", table(7, 7)], session=session
        )
        assert msg["success"] is True
        other = uuid.uuid4().hex
        call_event(url, fn_index(demo, "edit_original"), ["mnist", table(7, 7)], session=other)
        assert wait_until(lambda: other not in holder.session_data, 10), "no page: dropped"
        assert session in holder.session_data, "its page is open: kept"
    finally:
        closed.set()
        page.join(timeout=30)


# -- values Gradio would refuse with a generic error -------------------------------------------


@pytest.mark.parametrize(
    "event, data, words",
    [
        ("edit", [None, table(7, 7)], "No model chosen: choose one of mnist"),
        ("code", [None, 3], "No model chosen"),
        ("codebook", ["mnist", "2-D", None], "ok"),  # docs/api.md: None, no grid
        ("code", ["mnist", "7"], "ok"),
        ("code", ["mnist", "nan"], "whole number"),
        ("code", ["mnist", [1]], "whole number"),
        ("interpolate", [None, None, "mnist", "nan", 12, "lerp", True], "frames"),
        ("interpolate", [None, None, "mnist", "64", "x", "lerp", True], "per second|frames"),
    ],
)
def test_raw_values_reach_the_handlers(live_app, event, data, words):
    msg = call_event(live_app.url, fn_index(live_app.demo, event), data)
    if words == "ok":
        assert msg["success"] is True, msg
    else:
        assert msg["success"] is False, msg
        assert re.search(words, msg["output"]["error"] or ""), msg


def test_guards_survive_updates_in_the_session(live_app):
    """The page's first event updates the code pickers (gr.update: Gradio rebuilds them in
    the session from their class); a string sent afterwards still reaches the handler."""
    url, demo = live_app.url, live_app.demo
    session = uuid.uuid4().hex
    assert call_event(url, fn_index(demo, "load_model"), ["mnist"], session=session)["success"]
    state = demo.server_app.state_holder[session]
    pick = demo.fns[fn_index(demo, "code")].inputs[1]
    assert pick._id in state.blocks_config.blocks and state[pick._id] is not pick, "rebuilt"
    assert type(state[pick._id]) is type(pick)
    msg = call_event(url, fn_index(demo, "code"), ["mnist", "nan"], session=session)
    assert "whole number" in (msg["output"].get("error") or ""), msg
    # the page draws them as Gradio's own components; no .pyi stub was written
    config = httpx.get(url + "config", timeout=30).json()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    assert kinds[pick._id] == "number"
    assert not list(Path(explorer.__file__).parent.glob("*.pyi"))
