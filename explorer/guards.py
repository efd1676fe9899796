"""What keeps a public app standing: errors that never leak internals, a disk that stays
within budget, and uploads Gradio would otherwise trust (the drawing pad's blobs, image
files Gradio would open itself)."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tempfile
import threading
import time
import warnings
from abc import ABCMeta
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import PIL.Image
from gradio.component_meta import ComponentMeta

from vqvae import images

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


def session_key() -> str:
    """A folder name for the client session of the event running in this thread: a hash of
    Gradio's session hash (chosen by the client, so never a path itself), or "direct" when
    the handler is called outside an event (scripts, tests)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    session = getattr(request, "session_hash", None)
    if not session:
        return "direct"
    return hashlib.sha256(str(session).encode()).hexdigest()[:32]


class OutputFiles:
    """Files the app hands out (PNG and .npy downloads, GIFs, .vqz), one folder per client
    session, so that no client's traffic removes another's files:

    - a session's files are trimmed, oldest first, only by that session's own new files,
      once they add up to more than ``session_budget`` bytes (its ``keep`` newest stay: those
      of its requests in flight);
    - any file older than ``lifetime`` seconds is removed (the age at which Gradio's
      ``delete_cache`` removes its copies);
    - all sessions together hold at most ``budget`` bytes and ``MAX_OUTPUT_FILES`` files:
      beyond them a new file is refused with a gr.Error (try again later), rather than taking
      space from another session.

    Where the app owns Gradio's cache folder (``gradio_cache``), the files are written in it
    (under ``app/``): Gradio serves them from there without a second copy. Elsewhere they go
    to ``folder``, and Gradio copies each into its cache (under a name of its own, written
    whole before it is renamed into place) as its event answers."""

    def __init__(
        self,
        folder: Path,
        budget: int = settings.OUTPUT_BUDGET,
        gradio_cache: str | Path | None = None,
        gradio_cache_budget: int = settings.GRADIO_CACHE_BUDGET,
        *,
        session_budget: int = settings.SESSION_OUTPUT_BUDGET,
        lifetime: float = settings.FILE_LIFETIME,
        keep: int = 2 * settings.CONCURRENCY,
    ):
        self.folder = Path(gradio_cache) / "app" if gradio_cache else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.budget = budget
        self.gradio_cache = Path(gradio_cache) if gradio_cache else None
        self.gradio_cache_budget = gradio_cache_budget
        self.session_budget = session_budget
        self.lifetime = lifetime
        self.keep = keep
        # session -> its files as (time, path), oldest first
        self._files: dict[str, list[tuple[float, Path]]] = {}
        self._sizes: dict[Path, int] = {}
        self._lock = threading.Lock()

    def new(self, suffix: str, session: str | None = None) -> str:
        """A fresh, empty file for a result of the current event's session (``session``: a
        folder name, default :func:`session_key`). Trims that session's older files to its
        budget and everyone's expired files first; gr.Error if all sessions together are
        over the total budget."""
        session = session or session_key()
        with self._lock:
            self._expire(time.monotonic() - self.lifetime)
            self._trim(session)
            count = sum(map(len, self._files.values()))
            if self.total() >= self.budget or count >= settings.MAX_OUTPUT_FILES:
                log.warning("output files over their budget of %d bytes", self.budget)
                raise gr.Error(
                    "The server holds too many results just now; try again in a few minutes.",
                    title="Server busy",
                )
            folder = self.folder / session
            folder.mkdir(exist_ok=True)
            fd, path = tempfile.mkstemp(suffix=suffix, dir=folder)
            os.close(fd)
            self._files.setdefault(session, []).append((time.monotonic(), Path(path)))
        return path

    def total(self) -> int:
        """Bytes of all sessions' files (as they are on disk now)."""
        return sum(self._size(t, p) for files in self._files.values() for t, p in files)

    def _size(self, born: float, path: Path) -> int:
        # a file is written after new() returns it: its size is remembered once it is done
        size = self._sizes.get(path)
        if size is None:
            try:
                size = path.stat().st_size
            except OSError:  # removed meanwhile (Gradio's delete_cache)
                return 0
            if time.monotonic() - born > settings.OUTPUT_WRITE_SECONDS:
                self._sizes[path] = size
        return size

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sizes.pop(path, None)

    def _trim(self, session: str) -> None:
        files = self._files.get(session, [])
        used = sum(self._size(t, p) for t, p in files)
        while len(files) > self.keep and (
            used > self.session_budget or len(files) > settings.SESSION_OUTPUT_FILES
        ):
            t, p = files.pop(0)
            used -= self._size(t, p)
            self._remove(p)

    def _expire(self, before: float) -> None:
        for session in list(self._files):
            files = self._files[session]
            while files and files[0][0] < before:
                self._remove(files.pop(0)[1])
            if not files:
                del self._files[session]
                try:
                    (self.folder / session).rmdir()
                except OSError:  # not empty (a file being written) or already gone
                    pass


class UploadSpace:
    """ASGI middleware: an upload (POST .../upload) that would take Gradio's cache folder
    (``files.gradio_cache``: uploads, output images, results) over
    ``files.gradio_cache_budget`` bytes is refused with 507 and a short reason, before its
    body is read (one without a Content-Length: 411). Files leave the folder by age only
    (Gradio's ``delete_cache``), so no upload removes anyone's file; an upload is kept for
    that lifetime even if no event ever uses it."""

    def __init__(self, app, files: OutputFiles):
        self.app = app
        self.files = files
        self._used = (0.0, 0)  # (when measured, bytes): one walk a second at most

    def used(self) -> int:
        """Bytes in Gradio's cache folder, measured at most once a second."""
        when, used = self._used
        if time.monotonic() - when > 1.0:
            used = 0
            for root, _, names in os.walk(self.files.gradio_cache):
                for name in names:
                    try:
                        used += os.lstat(os.path.join(root, name)).st_size
                    except OSError:  # removed meanwhile
                        pass
            self._used = (time.monotonic(), used)
        return used

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/upload")
            and self.files.gradio_cache is not None
        ):
            import anyio
            from starlette.responses import PlainTextResponse

            size = dict(scope["headers"]).get(b"content-length", b"")
            if not size.isdigit():  # browsers and gradio_client always send it
                reason = "An upload must say its length (Content-Length)."
                await PlainTextResponse(reason, status_code=411)(scope, receive, send)
                return
            size = int(size)
            used = await anyio.to_thread.run_sync(self.used)
            if used + size > self.files.gradio_cache_budget:
                log.warning("upload refused: Gradio's cache is over its budget")
                reason = "The server's space for uploads is full; try again in a few minutes."
                await PlainTextResponse(reason, status_code=507)(scope, receive, send)
                return
            self._used = (self._used[0], self._used[1] + size)  # until measured again
        await self.app(scope, receive, send)


def save_pil_to_cache(
    img: PIL.Image.Image, cache_dir: str, name: str = "image", format: str = "webp"
) -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, except that the file is never
    rewritten in place.

    Gradio stores an output image under a folder named by the hash of its encoded bytes, so
    two requests with the same result (clients sending the same image) get the same path;
    its version truncates and rewrites that file on every request, and a client still
    downloading it gets a body shorter than the Content-Length it was promised. Here a file
    already there is left alone (its bytes are the ones about to be written) and only its
    time is renewed (``delete_cache`` ages files by it); a new one is written under a
    temporary name and renamed into place, as Gradio's ``save_file_to_cache`` does, so no
    reader ever sees it half-written. Identical results are still stored once."""
    from gradio import processing_utils

    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    try:
        os.utime(path)
        return str(path)
    except FileNotFoundError:
        pass
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def guard_gradio_image_cache() -> None:
    """Make Gradio store output images with :func:`save_pil_to_cache` (process-wide: every
    gr.Image, gr.Gallery and array output goes through ``processing_utils``'s function).
    Gradio has no option for it; idempotent."""
    from gradio import processing_utils

    processing_utils.save_pil_to_cache = save_pil_to_cache


def image_pixels(source) -> int:
    """Width x height of an image file (a path or its bytes), read from its header: nothing is
    decoded. ValueError when it is no image PIL can read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            with PIL.Image.open(fp) as im:
                return im.width * im.height
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        raise ValueError("not an image") from e


def guard_drawing_pad(pad: gr.ImageEditor) -> None:
    """Replace the pad's ``accept_blobs`` server function (POST /gradio_api/component_server,
    outside the queue) by one that stores only what the app reads, within bounds.

    Gradio's own trusts the client: a layer ``index`` of 50 000 000 allocates a list of that
    length, and blobs under new ids are kept until an event consumes them. This one keeps
    only the composite (the app never reads layers or the background), refuses blobs over
    ``PAD_BLOB_BYTES`` or ``PAD_BLOB_PIXELS`` (PNG header checked, nothing decoded), and keeps
    at most ``PAD_BLOBS`` drawings for at most ``PAD_BLOB_SECONDS``. (The pad is never
    updated with gr.update, which would replace it in the session by a fresh, unguarded
    copy: its visibility is set on the column around it.) What an event sends as the pad's
    value is checked by :func:`guard_inputs`."""
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
            pixels = image_pixels(blob)
        except ValueError:
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


# -- what events receive, before Gradio's preprocessing ------------------------------------
#
# Gradio turns each input into what the handler gets (component.preprocess) before the
# handler runs: it decodes images sent as data URLs with nothing but PIL's own limit, and
# fails on a number sent as a string with a generic error. The guarded classes below change
# only that step. They are classes, not instance overrides, because Gradio rebuilds a
# component in a session from its class when an event updates it (gr.update).


def _number(self, payload):
    """Numbers as Gradio checks them (its bounds, its rounding); anything else (a string, a
    list) reaches the handler as sent, which says what it expected."""
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return type(self).__base__.preprocess(self, payload)
    return payload


def _table(self, payload):
    """None (no table) reaches the handler, which says whether that is allowed."""
    return None if payload is None else type(self).__base__.preprocess(self, payload)


def _data_url_file(self, payload) -> str:
    """The bytes of a data URL image, written to Gradio's cache as they came: nothing decoded
    (the request body cap bounds their size)."""
    from gradio import processing_utils

    try:
        return processing_utils.save_base64_to_cache(payload.url, self.GRADIO_CACHE)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise gr.Error("The image's data URL is not valid base64.") from None


def _image(self, payload):
    """The file's path, with no image opened: vqvae.images.load_image reads its header in the
    handler and refuses what is too large. A data URL becomes a file first (Gradio would
    decode it); other modes than a plain path are checked from the header, then Gradio's."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):
        payload = payload.model_copy(update={"path": _data_url_file(self, payload), "url": None})
    if self.type == "filepath" and self.image_mode is None:
        return payload.path
    _check_pixels(payload.path, images.MAX_DECODED_PIXELS, "image")
    return type(self).__base__.preprocess(self, payload)


def _pad(self, payload):
    """The drawing pad's value sent with the event (not through its blob upload): only the
    composite is kept (the app reads nothing else), checked from its header against the
    pad's own limit before Gradio decodes it."""
    base = type(self).__base__
    if payload is None or payload.id is not None:  # blobs were checked as they came
        return base.preprocess(self, payload)
    composite = payload.composite
    if composite is not None:
        if isinstance(composite, (bytes, bytearray)) or not composite.path:
            raise gr.Error("The drawing must be a file or an uploaded blob.")
        _check_pixels(composite.path, settings.PAD_BLOB_PIXELS, "drawing")
    return base.preprocess(self, payload.model_copy(update={"background": None, "layers": []}))


def _check_pixels(path, limit: int, what: str) -> None:
    try:
        pixels = image_pixels(path)
    except ValueError:
        raise gr.Error(f"The {what} is not an image this app can read.") from None
    if pixels > limit:
        raise gr.Error(f"The {what} is too large: the limit is {limit / 1e6:.1f} megapixels.")


def _guarded(base: type, preprocess: Callable) -> type:
    """A subclass of the Gradio component class ``base`` with another ``preprocess``, drawn
    by the page as ``base``. Built by ABCMeta.__new__, without ComponentMeta.__new__: that
    writes a .pyi stub beside the module of every component class it builds; a subclass
    that changes one method needs nothing else of it (events and __init__ are inherited)."""
    block = (base.__base__ if hasattr(base, "is_template") else base).__name__.lower()
    attrs = {
        "__module__": __name__,
        "__doc__": f"{base.__name__} whose preprocess is {preprocess.__name__}.",
        "preprocess": preprocess,
        "get_block_name": lambda self: block,
        "get_block_class": lambda self: block,
    }
    return ABCMeta.__new__(ComponentMeta, f"Guarded{base.__name__}", (base,), attrs)


_GUARDS = [  # most specific first: Sketchpad is an ImageEditor
    (gr.Sketchpad, _pad),
    (gr.ImageEditor, _pad),
    (gr.Image, _image),
    (gr.Slider, _number),
    (gr.Number, _number),
    (gr.Dataframe, _table),
]
_GUARDED = {base: _guarded(base, fn) for base, fn in _GUARDS}


def guard(component):
    """Give ``component`` (in place) the guarded preprocessing of its kind, if it has one;
    returns it."""
    cls = type(component)
    if cls in _GUARDED:
        component.__class__ = _GUARDED[cls]
    return component


def guard_inputs(demo: gr.Blocks) -> None:
    """Guard every input of every event of ``demo`` (see :func:`guard`)."""
    for fn in demo.fns.values():
        for block in fn.inputs:
            guard(block)


def image_input(**kw) -> gr.Image:
    """An image upload whose handler gets the uploaded file's path without Gradio opening it,
    so that vqvae.images.load_image decides what is a usable image and says why not (a data
    URL is written to a file first)."""
    return guard(gr.Image(type="filepath", image_mode=None, **kw))
