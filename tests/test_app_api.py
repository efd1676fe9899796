"""The app's HTTP API through gradio_client, as docs/api.md shows it: a real server on a free
port, tiny models, every endpoint, bad inputs answered with errors, and the server still
answering afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from app_helpers import make_models
from tools.ports import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    models, examples = make_models(root)
    demo, handlers = app.build_app(models, examples, cache_dir=root / "cache")
    port = free_port()
    app.launch(demo, handlers, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), examples
    finally:
        demo.close()


def test_reconstruct(server):
    client, examples = server
    orig, recon, cmap, psnr, used, bits, table = client.predict(
        handle_file(str(examples / "mnist" / "00.png")), "mnist", api_name="/reconstruct"
    )
    assert Image.open(recon).size == (252, 252)
    assert Image.open(cmap).size == (252, 252)
    codes = np.array(table["data"])
    assert codes.shape == (7, 7) and used == len(np.unique(codes))
    assert bits == 245.0 and 0 < psnr < 100


def test_codebook_and_code(server):
    client, examples = server
    table = client.predict(
        handle_file(str(examples / "cifar10" / "01.png")), "cifar10", api_name="/reconstruct"
    )[6]
    plot, summary = client.predict("cifar10", "2-D", table, api_name="/codebook")
    fig = json.loads(plot["plot"])
    assert len(fig["data"]) == 2 and "distinct codes" in summary
    image, details, near = client.predict("cifar10", 3, api_name="/code")
    assert Image.open(image).size == (256, 256)
    assert "Code 3" in details and len(near) == 8


def test_edit(server):
    client, _ = server
    grid = {"headers": [str(j) for j in range(7)], "data": [[5] * 7 for _ in range(7)]}
    image, cmap, png, npy = client.predict("mnist", grid, api_name="/edit")
    assert Image.open(png).size == (28, 28)
    assert (np.load(npy) == 5).all()


def test_interpolate(server):
    client, examples = server
    a, b = (handle_file(str(examples / "mnist" / f"0{i}.png")) for i in (0, 1))
    gif, strip = client.predict(a, b, "mnist", 8, 10, "slerp", True, api_name="/interpolate")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.info.get("loop") == 0


def test_bad_inputs_are_errors_and_the_server_survives(server, tmp_path):
    client, examples = server
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
    out = client.predict(
        handle_file(str(examples / "mnist" / "02.png")), "mnist", api_name="/reconstruct"
    )
    assert np.array(out[6]["data"]).shape == (7, 7)


def test_docs_api_examples_run(server):
    """Every Python block of docs/api.md, run against this server and its example images."""
    client, examples = server
    doc = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 4
    for code in blocks:
        code = code.replace("http://127.0.0.1:7860/", client.src).replace(
            "assets/examples/", f"{examples}/"
        )
        exec(compile(code, "docs/api.md", "exec"), {})
