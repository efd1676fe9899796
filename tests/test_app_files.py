"""The files the app hands out and receives: each lives until its client has used it (or a
fixed lifetime), no client's traffic removes another's, disk use is bounded per session and
in total, and a file being served is never rewritten."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

import explorer
from app_helpers import call_event, fn_index
from explorer import settings
from explorer.files import save_pil_to_cache


@pytest.fixture(scope="module")
def owned_app(plain_models, tmp_path_factory):
    """A running app that owns Gradio's cache folder, as ``python app.py`` sets it up."""
    from tools.ports import free_port

    root = tmp_path_factory.mktemp("owned")
    gradio_cache = root / "gradio"
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_cache)  # read as it is built and as it runs
    demo, handlers = explorer.build_app(
        plain_models.models, plain_models.examples, root / "cache", gradio_cache=gradio_cache
    )
    port = free_port()
    explorer.launch(demo, handlers, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{port}/", demo=demo, handlers=handlers, cache=gradio_cache,
            examples=plain_models.examples,
        )  # fmt: skip
    finally:
        demo.close()
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR")
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


def _upload(url: str, path) -> dict:
    r = httpx.post(url + "gradio_api/upload", files={"files": open(path, "rb")}, timeout=30)
    r.raise_for_status()
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


def _interpolate(app, a: dict, b: dict) -> dict:
    msg = call_event(
        app.url, fn_index(app.demo, "interpolate"), [a, b, "mnist", 3, 12, "lerp", False]
    )
    assert msg["success"], msg
    return msg["output"]["data"][0]  # the GIF


def _urls(x) -> list[str]:
    if isinstance(x, dict):
        return ([x["url"]] if x.get("url") else []) + [u for v in x.values() for u in _urls(v)]
    if isinstance(x, list):
        return [u for v in x for u in _urls(v)]
    return []


def test_other_clients_traffic_removes_no_file(owned_app):
    """A visitor's upload and result stay usable while other clients send many more events
    than the app keeps files in flight for."""
    digit = owned_app.examples / "mnist" / "00.png"
    files = owned_app.handlers.files
    budget, files.session_budget = files.session_budget, 0  # each session keeps its newest
    try:
        mine = _upload(owned_app.url, digit)
        gif = _interpolate(owned_app, mine, mine)
        other = _upload(owned_app.url, owned_app.examples / "mnist" / "01.png")
        for _ in range(4 * settings.CONCURRENCY + 2):  # each call a new session
            _interpolate(owned_app, other, other)
    finally:
        files.session_budget = budget
    assert Path(gif["path"]).parent.parent == owned_app.cache / "app", "in its session's folder"
    r = httpx.get(gif["url"], timeout=30)
    assert r.status_code == 200 and r.content[:6] == b"GIF89a", "the visitor's result is there"
    msg = call_event(owned_app.url, fn_index(owned_app.demo, "reconstruct"), [mine, "mnist", "own"])
    assert msg["success"], f"the visitor's upload is there: {msg}"


def test_uploads_are_refused_while_the_cache_is_full(owned_app):
    """Uploads no event uses stay for the cache's lifetime, so they are bounded by refusing
    new ones while Gradio's cache is over its budget (nothing already there is removed)."""
    digit = owned_app.examples / "mnist" / "00.png"
    kept = _upload(owned_app.url, digit)
    files = owned_app.handlers.files
    budget, files.gradio_cache_budget = files.gradio_cache_budget, 1
    try:
        time.sleep(1.1)  # the cache's size is measured once a second
        r = httpx.post(
            owned_app.url + "gradio_api/upload", files={"files": open(digit, "rb")}, timeout=30
        )
        assert r.status_code == 507 and "try again" in r.text
    finally:
        files.gradio_cache_budget = budget
    assert Path(kept["path"]).is_file()
    chunked = httpx.post(
        owned_app.url + "gradio_api/upload",
        content=iter([b"--x\r\n"]),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert chunked.status_code == 411
    time.sleep(1.1)
    assert _upload(owned_app.url, digit)["path"] == kept["path"], "space again"


def test_same_output_downloaded_by_many_clients_at_once(owned_app):
    """Clients sending the same image get the same output files; fetching them while other
    requests produce them again never gets a short body."""
    digit = owned_app.examples / "mnist" / "00.png"
    index = fn_index(owned_app.demo, "reconstruct")

    def client(_):
        failures = 0
        with httpx.Client(timeout=60) as http:
            for _ in range(3):
                msg = call_event(
                    owned_app.url, index, [_upload(owned_app.url, digit), "mnist", "own"]
                )
                assert msg["success"], msg
                for url in _urls(msg["output"]["data"]):
                    try:
                        http.get(url).raise_for_status()
                    except httpx.HTTPError:
                        failures += 1
        return failures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(client, range(8))) == 0


def test_an_output_image_is_written_once_and_whole(tmp_path):
    """The same image saved again leaves the served file alone (same inode, never
    truncated), and a new one appears only complete (written aside, renamed into place)."""
    im = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    path = Path(save_pil_to_cache(im, str(tmp_path)))
    data, inode = path.read_bytes(), path.stat().st_ino
    with open(path, "rb") as reading:  # a download in progress
        assert save_pil_to_cache(im, str(tmp_path)) == str(path)
        assert reading.read() == data
    assert path.stat().st_ino == inode and path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no staging file left"
    from gradio import processing_utils

    explorer.configure_process()
    assert processing_utils.save_pil_to_cache is save_pil_to_cache


def _in_session(session: str):
    from gradio.context import LocalContext

    LocalContext.request.set(gr.Request(session_hash=session))


def test_a_session_trims_only_its_own_files(plain_models, tmp_path):
    """300 GIFs of one session: its folder stays within its budget (its newest files stay);
    another session's older file is untouched; expired files go; beyond the total budget a
    new file is refused, not taken from anyone."""
    h = explorer.Handlers(plain_models.models, plain_models.examples, tmp_path / "cache")
    files = h.files
    files.session_budget = 50_000
    a, b = (str(plain_models.examples / "mnist" / f"0{i}.png") for i in (0, 1))
    _in_session("visitor")
    visitor = Path(h.interpolate.gif(a, b, "mnist", 3, 12, "lerp", False).gif)
    _in_session("busy")
    biggest = 0
    for i in range(300):
        gif = Path(h.interpolate.gif(a, b, "mnist", 2 + i % 3, 12, "lerp", False).gif)
        biggest = max(biggest, gif.stat().st_size)
    assert visitor.is_file() and gif.is_file()
    assert visitor.parent != gif.parent, "one folder per session"
    used = sum(p.stat().st_size for p in gif.parent.iterdir())
    assert used <= files.session_budget + files.keep * biggest
    assert files.total() == used + visitor.stat().st_size

    files.session_budget = 10**9  # no session over its own budget,
    files.budget = files.total()  # and all of them full: refused, nothing removed
    with pytest.raises(gr.Error, match="try again"):
        h.interpolate.gif(a, b, "mnist", 3, 12, "lerp", False)
    assert visitor.is_file()
    files.lifetime = 0  # all expired: removed by age, space again
    Path(files.new(".gif", session="later")).write_bytes(b"x")
    assert not visitor.exists() and not gif.exists() and files.total() == 1
    assert settings.OUTPUT_BUDGET + settings.GRADIO_CACHE_BUDGET < 512 * 2**20


def test_a_named_file_keeps_its_name_and_goes_with_its_folder(tmp_path):
    """Two files of one name (two downloads of photo.vqz) side by side, each in a folder
    of its own, which goes when the file is trimmed or expires."""
    from explorer.files import OutputFiles

    files = OutputFiles(tmp_path / "out", session_budget=0, keep=1)
    first = Path(files.new(".vqz", session="s", name="photo"))
    first.write_bytes(b"abc")
    second = Path(files.new(".vqz", session="s", name="photo"))
    assert first.name == second.name == "photo.vqz" and first.parent != second.parent
    assert first.parent.parent == second.parent.parent == tmp_path / "out" / "s"
    third = Path(files.new(".vqz", session="s", name="photo"))  # over budget: the oldest goes
    assert not first.parent.exists() and second.exists() and third.exists()
    files.lifetime = 0
    files.new(".gif", session="t")
    assert not (tmp_path / "out" / "s").exists(), "its session folder goes too"


def test_one_address_uploads_at_most_its_share(tmp_path):
    """Gradio's upload route names no session: a client address's uploads within the files'
    lifetime are bounded (429 beyond), other addresses and later uploads unaffected."""
    import asyncio

    from explorer.files import OutputFiles, UploadSpace

    passed = []

    async def app(scope, receive, send):
        passed.append(scope["client"][0])

    def upload(space, host, size, forwarded=None):
        headers = [(b"content-length", str(size).encode())]
        if forwarded:
            headers.append((b"x-forwarded-for", forwarded.encode()))
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload",
                 "headers": headers, "client": (host, 5000), "query_string": b""}  # fmt: skip
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(space(scope, None, send))
        return sent[0]["status"] if sent else 200

    files = OutputFiles(tmp_path / "app", gradio_cache=tmp_path / "gradio")
    space = UploadSpace(app, files, per_address=1000, lifetime=60, trust_forwarded_for=False)
    assert [upload(space, "203.0.113.5", 600), upload(space, "203.0.113.5", 300)] == [200, 200]
    assert upload(space, "203.0.113.5", 200) == 429  # 1100 bytes within the lifetime
    assert upload(space, "198.51.100.7", 900) == 200  # another address has its own share
    assert upload(space, "127.0.0.1", 10_000) == 200  # loopback: this machine, not counted
    minutes = space._by_address["203.0.113.5"]  # as if they were made two minutes earlier
    space._by_address["203.0.113.5"] = {m - 2: n for m, n in minutes.items()}
    assert upload(space, "203.0.113.5", 900) == 200  # the earlier uploads have expired
    assert passed == ["203.0.113.5"] * 2 + ["198.51.100.7", "127.0.0.1", "203.0.113.5"]
    # behind a Space's proxy the client is the address X-Forwarded-For names
    proxied = UploadSpace(app, files, per_address=1000, lifetime=60, trust_forwarded_for=True)
    assert upload(proxied, "10.0.0.1", 900, forwarded="203.0.113.9") == 200
    assert upload(proxied, "10.0.0.1", 900, forwarded="203.0.113.9") == 429
    assert upload(proxied, "10.0.0.1", 900, forwarded="203.0.113.10") == 200
