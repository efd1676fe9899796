"""The app's HTTP API through gradio_client, as docs/api.md shows it: a real server on a free
port, tiny models, every endpoint, bad inputs answered with errors, and the server still
answering afterwards."""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import explorer
from app_helpers import call_event, fn_index, run_api_doc_blocks
from explorer import settings
from explorer.tabs.codebook import CodebookView, CodeDetails
from explorer.tabs.edit import Decoded
from explorer.tabs.interpolate import Interpolation
from explorer.tabs.reconstruct import Reconstruction
from tools.ports import free_port


def test_reconstruct(live_app):
    client, examples = live_app.client, live_app.examples
    out = Reconstruction(
        *client.predict(
            handle_file(str(examples / "mnist" / "00.png")), "mnist", api_name="/reconstruct"
        )
    )
    assert Image.open(out.reconstruction).size == (252, 252)
    assert Image.open(out.code_map).size == (252, 252)
    codes = np.array(out.grid["data"])
    assert codes.shape == (7, 7) and out.codes_used == len(np.unique(codes))
    assert out.bits == 245.0 and 0 < out.psnr < 100


def test_codebook_and_code(live_app):
    client, examples = live_app.client, live_app.examples
    table = Reconstruction(
        *client.predict(
            handle_file(str(examples / "cifar10" / "01.png")), "cifar10", api_name="/reconstruct"
        )
    ).grid
    view = CodebookView(*client.predict("cifar10", "2-D", table, api_name="/codebook"))
    fig = json.loads(view.figure["plot"])
    assert len(fig["data"]) == 2 and "distinct codes" in view.summary
    code = CodeDetails(*client.predict("cifar10", 3, api_name="/code"))
    assert Image.open(code.image).size == (256, 256)
    assert "Code 3" in code.details and len(code.neighbours) == 8


def test_edit(live_app):
    client = live_app.client
    grid = {"headers": [str(j) for j in range(7)], "data": [[5] * 7 for _ in range(7)]}
    out = Decoded(*client.predict("mnist", grid, api_name="/edit"))
    assert Image.open(out.png).size == (28, 28)
    assert (np.load(out.npy) == 5).all()


def test_interpolate(live_app):
    client, examples = live_app.client, live_app.examples
    a, b = (handle_file(str(examples / "mnist" / f"0{i}.png")) for i in (0, 1))
    out = Interpolation(
        *client.predict(a, b, "mnist", 8, 10, "slerp", True, api_name="/interpolate")
    )
    with Image.open(out.gif) as im:
        assert im.format == "GIF" and im.info.get("loop") == 0


def test_bad_inputs_are_errors_and_the_server_survives(live_app, tmp_path):
    client, examples = live_app.client, live_app.examples
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    grid = {"headers": [str(j) for j in range(7)], "data": [[5] * 7 for _ in range(7)]}
    bad_calls = [
        (
            lambda: client.predict(handle_file(str(junk)), "mnist", api_name="/reconstruct"),
            "not an image|corrupt",
        ),
        (lambda: client.predict(None, "mnist", api_name="/reconstruct"), "No image"),
        (
            lambda: client.predict("mnist", {**grid, "data": [[999] * 7] * 7}, api_name="/edit"),
            "between 0 and 31",
        ),
        (lambda: client.predict("mnist", {**grid, "data": [[1] * 3] * 2}, api_name="/edit"), "7x7"),
        (
            lambda: client.predict(
                "mnist", "2-D", {**grid, "data": [[1] * 8] * 8}, api_name="/codebook"
            ),
            "7x7",
        ),
        (lambda: client.predict("mnist", 10**9, api_name="/code"), "between 0 and 31"),
        (
            lambda: client.predict(
                handle_file(str(examples / "mnist" / "00.png")),
                handle_file(str(examples / "mnist" / "01.png")),
                "mnist",
                10**7,
                12,
                "lerp",
                True,
                api_name="/interpolate",
            ),
            "frames|maximum",
        ),
        (
            lambda: client.predict(
                handle_file(str(examples / "mnist" / "00.png")),
                handle_file(str(examples / "mnist" / "01.png")),
                "mnist",
                8,
                12,
                "sideways",
                True,
                api_name="/interpolate",
            ),
            None,
        ),
    ]
    for call, words in bad_calls:
        with pytest.raises((AppError, ValueError)) as err:
            call()
        if words:
            assert re.search(words, str(err.value)), str(err.value)
    # still up, still right
    out = Reconstruction(
        *client.predict(
            handle_file(str(examples / "mnist" / "02.png")), "mnist", api_name="/reconstruct"
        )
    )
    assert np.array(out.grid["data"]).shape == (7, 7)


def test_docs_api_examples_run(live_app):
    """Every Python block of docs/api.md, run against this server and its example images."""
    # 4 blocks for the tabs, 3 for the codec panel, 3 for the prior's events
    assert run_api_doc_blocks(live_app.url, live_app.examples) == 11


# -- hardening: what any client can send ---------------------------------------------------

INTERNALS = re.compile(r"Traceback|[A-Za-z]+Error\b|/(tmp|home|work|usr|srv)/|File \"")


def assert_clear_error(msg: dict, words: str | None):
    """The event failed with a gr.Error saying ``words`` (None: a generic answer), and the
    message shows no internals (exception names, tracebacks, server paths)."""
    assert msg["success"] is False, msg
    error = msg["output"].get("error")
    if words is None:
        assert error is None or "went wrong" in error, error
    else:
        assert error and re.search(words, error), error
    assert not INTERNALS.search(error or ""), error


def grid7(value=5):
    return {"headers": [str(j) for j in range(7)], "data": [[value] * 7 for _ in range(7)]}


@pytest.mark.parametrize(
    "event, data, index, words",
    [
        ("interpolate_example", ["mnist", "A", None, None], 99, "between 0 and 5"),
        ("interpolate_example", ["mnist", "C", None, None], 0, "choices"),  # Gradio checks
        ("atlas_pick", ["mnist"], 10**6, "between 0 and 31"),
        ("paint_code_pick", ["mnist"], -1, "between 0 and 31"),
        ("paint", ["mnist", grid7(), 3], 7, "Click a cell"),
        ("paint", ["mnist", grid7(), 3], [-300, -300], "outside"),
        ("paint", ["mnist", grid7(), 3], [-40, -40], "outside"),  # once painted cell (-2, -2)
        ("paint", ["mnist", grid7(), 3], [float("nan"), 3], "outside"),
        ("reconstruct_example", ["mnist", "own"], "a", "whole number"),
        ("reconstruct_example", ["mnist", "own"], [1, 2], "Pick one"),
    ],
)
def test_private_events_check_their_inputs(live_app, event, data, index, words):
    """Events the page sends are callable by fn_index too, with any event data."""
    msg = call_event(
        live_app.url, fn_index(live_app.demo, event), data, {"index": index, "value": None}
    )
    assert_clear_error(msg, words)


@pytest.mark.parametrize(
    "event, data, words",
    [
        ("code", ["mnist", float("inf")], "whole number"),
        ("code", ["mnist", float("-inf")], "minimum"),
        ("code", ["mnist", float("nan")], "whole number"),
        ("code", ["mnist", 2.5], "whole number"),
        ("paint_tile", ["mnist", float("inf")], "ok"),
        ("paint_tile", ["mnist", 2**19], "ok"),  # a half-typed code: no tile, no error
        ("interpolate", [None, None, "mnist", float("inf"), 12, "lerp", True], "frames|maximum"),
        ("interpolate", [None, None, "mnist", 8, float("nan"), "lerp", True], "per second|minimum"),
        ("interpolate", [None, None, "mnist", 8, 12, ["lerp"], True], "Path|choices"),
        ("edit", [["mnist"], grid7()], "Unknown model|choices"),
        ("codebook", ["mnist", {"x": 1}, None], "view|choices"),
        ("select_model", [".hidden"], "Unknown model|choices"),
    ],
)
def test_numbers_and_values_out_of_range(live_app, event, data, words):
    msg = call_event(live_app.url, fn_index(live_app.demo, event), data)
    if words == "ok":
        assert msg["success"] is True, msg
    else:
        assert_clear_error(msg, words)


def test_unexpected_errors_are_logged_not_shown(live_app, monkeypatch, caplog):
    def broken(m):
        raise RuntimeError("disk /srv/secret/atlas failed")

    monkeypatch.setattr(live_app.handlers.models, "atlas", broken)
    msg = call_event(live_app.url, fn_index(live_app.demo, "code"), ["mnist", 3])
    assert_clear_error(msg, None)
    assert "/srv/secret" not in json.dumps(msg)
    assert "disk /srv/secret/atlas failed" in caplog.text, "the server log keeps the details"


# The drawing pad's upload function: POST /gradio_api/component_server, outside the queue.


def sketchpad(demo) -> gr.ImageEditor:
    return next(b for b in demo.blocks.values() if isinstance(b, gr.ImageEditor))


def post_blob(live_app, kind: str, blob: bytes, index="null", blob_id=None) -> httpx.Response:
    form = {
        "type": kind,
        "index": str(index),
        "id": blob_id or uuid.uuid4().hex,
        "component_id": str(sketchpad(live_app.demo)._id),
        "session_hash": uuid.uuid4().hex,
        "fn_name": "accept_blobs",
    }
    return httpx.post(
        live_app.url + "gradio_api/component_server",
        data=form,
        files={"file": ("blob", blob, "image/png")},
        timeout=30,
    )


def rss_mb() -> float:
    with open("/proc/self/status") as f:  # the server runs in this process
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 1024


def png(size=(280, 280)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size).save(buf, "PNG")
    return buf.getvalue()


def test_drawing_pad_uploads_are_bounded(live_app):
    store = sketchpad(live_app.demo).blob_storage
    before = rss_mb()
    # one tiny request with a huge layer index once allocated a 50-million-entry list
    post_blob(live_app, "layer", b"x", index=50_000_000)
    assert rss_mb() - before < 100, "the layer index must not allocate memory"
    # blobs under ever new ids are not kept without bound
    for _ in range(settings.PAD_BLOBS + 16):
        assert post_blob(live_app, "composite", png((28, 28))).status_code == 200
    assert len(store) <= settings.PAD_BLOBS
    assert all(not b.layers and b.background is None for b in store.values())
    # too large: refused, not stored
    n = len(store)
    assert post_blob(live_app, "composite", b"\x89PNG" + bytes(2_000_000)).status_code == 413
    assert post_blob(live_app, "composite", png((3000, 3000))).status_code == 413
    assert post_blob(live_app, "composite", b"no image at all").status_code == 415
    assert len(store) <= n


def test_drawing_through_the_guarded_pad(live_app):
    """What the page does: upload the composite, then send the event with its id."""
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150] = (0, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(canvas, "RGBA").save(buf, "PNG")
    blob_id = uuid.uuid4().hex
    assert post_blob(live_app, "composite", buf.getvalue(), blob_id=blob_id).status_code == 200
    value = {"background": None, "layers": [], "composite": None, "id": blob_id}
    msg = call_event(live_app.url, fn_index(live_app.demo, "reconstruct_drawing"), [value, "mnist"])
    assert msg["success"] is True, msg
    assert msg["output"]["data"][4] >= 1  # codes used
    assert blob_id not in sketchpad(live_app.demo).blob_storage, "consumed by the event"


def test_load_small(live_app):
    """benchmarks/load.py, small: concurrent sessions over every main endpoint, no failures."""
    import os

    from benchmarks.load import ENDPOINTS, check_loopback, run_round

    a, b = (str(live_app.examples / "mnist" / f"0{i}.png") for i in (0, 1))
    res = run_round(live_app.url, "mnist", a, b, sessions=3, calls=1, server_pid=os.getpid())
    assert res.failures == []
    assert all(len(res.latencies[ep]) == 3 for ep in ENDPOINTS)
    assert res.rss_mb and res.rss_mb > 0
    assert "p95" in res.report("round")
    for url in ("http://10.0.0.1:7860/", "https://example.org/", "http://[::2]/"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(url)
    check_loopback("http://[::1]:7860/")


# -- main(): arguments, environment, process settings --------------------------------------


def test_main_reads_arguments_and_environment_and_owns_its_temp_folder(plain_models, monkeypatch):
    """``python app.py`` as a Space runs it: the port from $GRADIO_SERVER_PORT, the models
    from $VQVAE_MODELS_DIR (an argument wins over both), Gradio's cache in a folder of the
    app's own, torch threads and PIL's pixel limit set before serving."""
    import PIL.Image
    import torch

    from vqvae import images

    # unset for main() (empty reads as unset), and unset again afterwards: main() sets it
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")
    monkeypatch.setenv("VQVAE_MODELS_DIR", str(plain_models.models))
    monkeypatch.setenv("VQVAE_EXAMPLES_DIR", str(plain_models.examples))
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(free_port()))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", PIL.Image.MAX_IMAGE_PIXELS)
    threads = torch.get_num_threads()
    try:
        demo = explorer.main([], prevent_thread_lock=True, quiet=True)
        try:
            url = f"http://127.0.0.1:{os.environ['GRADIO_SERVER_PORT']}/"
            assert httpx.get(url + "config", timeout=30).status_code == 200
            names = Client(url, verbose=False).view_api(return_format="dict")
            assert "/reconstruct" in names["named_endpoints"]
            temp = Path(os.environ["GRADIO_TEMP_DIR"])
            assert temp.name == "gradio" and temp.parent.name.startswith("vqvae-app-")
            assert Path(demo.GRADIO_CACHE) == temp, "Gradio caches into the app's folder"
            assert PIL.Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS
            assert torch.get_num_threads() == settings.torch_threads()
        finally:
            demo.close()
        # an argument wins over the environment; a folder without models says so
        port = free_port()
        demo = explorer.main(
            ["--port", str(port), "--models-dir", str(plain_models.root / "none")],
            prevent_thread_lock=True,
            quiet=True,
        )
        try:
            page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).text
            assert "No models found" in page
        finally:
            demo.close()
    finally:
        torch.set_num_threads(threads)


def test_main_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        explorer.main(["--port", "not-a-number"])
    assert "--port" in capsys.readouterr().err


def test_main_takes_models_by_shipped_name_folder_or_hub_repo_id():
    args = explorer.app.parse_args(["--model", "org/name", "--model", "mnist"])
    assert args.sources == ["org/name", "mnist"]
    assert explorer.app.parse_args([]).sources is None, "then $VQVAE_MODELS decides"
