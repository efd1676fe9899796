"""What keeps a public app standing: errors that never leak internals, a disk that stays
within budget, and uploads Gradio would otherwise trust (the drawing pad's blobs, image
files Gradio would open itself)."""

from __future__ import annotations

import functools
import io
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import PIL.Image

from . import settings

log = logging.getLogger("vqvae.app")


def clear_errors(fn: Callable) -> Callable:
    """Events answer with gr.Error (its message is for the user); any other exception is a bug:
    it is logged here with its traceback and the client gets a generic message, without
    internals such as server paths."""

    @functools.wraps(fn)
    def event(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception:
            log.exception("event %s failed", fn.__name__)
            raise gr.Error(
                "Something went wrong on the server; it has been logged.", title="Server error"
            ) from None

    return event


def trim_folder(folder: Path, max_bytes: int, keep: int = 4) -> None:
    """Delete the oldest files under ``folder`` (and then empty subfolders) until their sizes
    add up to at most ``max_bytes``; the ``keep`` newest files always stay."""
    files = []
    for p in Path(folder).rglob("*"):
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile
            continue
        if stat.S_ISREG(st.st_mode):
            files.append((st.st_mtime, st.st_size, p))
    files.sort(reverse=True)
    total = sum(s for _, s, _ in files)
    for _, size, p in files[keep:][::-1]:
        if total <= max_bytes:
            break
        p.unlink(missing_ok=True)
        total -= size
        try:
            if p.parent != Path(folder):
                p.parent.rmdir()  # Gradio keeps one file per hash folder
        except OSError:
            pass


class OutputFiles:
    """Files handed to Gradio (PNG, .npy, GIF, .vqz), written to ``folder`` and deleted, oldest
    first, once they add up to ``budget`` bytes (Gradio copies each into its own cache as its
    event answers); ``gradio_cache``, when given, is trimmed to ``gradio_cache_budget`` bytes
    the same way (only for a folder the app owns)."""

    def __init__(
        self,
        folder: Path,
        budget: int = settings.OUTPUT_BUDGET,
        gradio_cache: str | Path | None = None,
        gradio_cache_budget: int = settings.GRADIO_CACHE_BUDGET,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.budget = budget
        self.gradio_cache = Path(gradio_cache) if gradio_cache else None
        self.gradio_cache_budget = gradio_cache_budget
        self._lock = threading.Lock()

    def new(self, suffix: str) -> str:
        """A fresh file for a download or GIF. Older ones (and Gradio's copies, when the app
        owns Gradio's cache) are trimmed to their budgets first."""
        keep = 2 * settings.CONCURRENCY  # those of the requests in flight
        with self._lock:
            trim_folder(self.folder, self.budget, keep=keep)
            if self.gradio_cache is not None and self.gradio_cache.is_dir():
                trim_folder(self.gradio_cache, self.gradio_cache_budget, keep=keep)
        fd, path = tempfile.mkstemp(suffix=suffix, dir=self.folder)
        os.close(fd)
        return path


def guard_drawing_pad(pad: gr.ImageEditor) -> None:
    """Replace the pad's ``accept_blobs`` server function (POST /gradio_api/component_server,
    outside the queue) by one that stores only what the app reads, within bounds.

    Gradio's own trusts the client: a layer ``index`` of 50 000 000 allocates a list of that
    length, and blobs under new ids are kept until an event consumes them. This one keeps
    only the composite (the app never reads layers or the background), refuses blobs over
    ``PAD_BLOB_BYTES`` or ``PAD_BLOB_PIXELS`` (PNG header checked, nothing decoded), and keeps
    at most ``PAD_BLOBS`` drawings for at most ``PAD_BLOB_SECONDS``. (The pad is never
    updated with gr.update, which would replace it in the session by a fresh, unguarded
    copy: its visibility is set on the column around it.)"""
    from fastapi import HTTPException
    from gradio.components.image_editor import EditorDataBlobs

    store = pad.blob_storage  # id -> blobs; Gradio's preprocess pops the id it uses
    born: dict[str, float] = {}
    lock = threading.Lock()

    def refuse(status: int, why: str):
        return HTTPException(status_code=status, detail=why)

    def composite(data) -> tuple[str, bytes] | None:
        """(id, PNG bytes) of a composite upload within bounds; None for other layers."""
        try:
            kind, blob_id = data.data["type"], data.data["id"]
            files = data.files
        except (AttributeError, KeyError, TypeError):
            raise refuse(400, "Malformed drawing upload.") from None
        if kind != "composite":
            return None  # layers and background: never read by the app, not kept
        if not (isinstance(blob_id, str) and 0 < len(blob_id) <= 64) or len(files) != 1:
            raise refuse(400, "Malformed drawing upload.")
        blob = files[0][1]
        if len(blob) > settings.PAD_BLOB_BYTES:
            raise refuse(413, "The drawing is too large.")
        try:
            with PIL.Image.open(io.BytesIO(blob)) as im:  # reads the header only
                pixels = im.width * im.height
        except (OSError, ValueError, PIL.Image.DecompressionBombError):
            raise refuse(415, "The drawing is not an image.") from None
        if pixels > settings.PAD_BLOB_PIXELS:
            raise refuse(413, "The drawing is too large.")
        return blob_id, blob

    def accept_blobs(data):
        got = composite(data)
        if got is None:
            return
        blob_id, blob = got
        with lock:
            now = time.monotonic()
            stale = [
                k for k, t in born.items() if k not in store or now - t > settings.PAD_BLOB_SECONDS
            ]
            for k in stale:
                store.pop(k, None)
                born.pop(k, None)
            while len(born) >= settings.PAD_BLOBS:
                oldest = min(born, key=born.get)
                store.pop(oldest, None)
                born.pop(oldest)
            store[blob_id] = EditorDataBlobs(background=None, layers=[], composite=blob)
            born[blob_id] = now

    accept_blobs._is_server_fn = True  # what Gradio's component_server route looks for
    pad.accept_blobs = accept_blobs


def image_input(**kw) -> gr.Image:
    """An image upload whose handler gets the uploaded file's path without Gradio opening it,
    so that vqvae.images.load_image decides what is a usable image and says why not. (An
    instance override rather than a subclass: Gradio writes a .pyi stub beside the source of
    every Image subclass. So never send it gr.update or gr.skip: that replaces it in the
    session by a plain gr.Image.)"""
    im = gr.Image(type="filepath", image_mode=None, **kw)
    gradio_preprocess = im.preprocess
    im.preprocess = lambda payload: (
        payload.path if payload is not None and payload.path else gradio_preprocess(payload)
    )  # data: URLs: Gradio
    return im
