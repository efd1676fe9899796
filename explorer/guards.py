"""What keeps a public app standing: errors that never leak internals, and inputs Gradio
would otherwise trust (the drawing pad's blobs, image files and data URLs Gradio would open
itself, raw values its components would refuse with an unclear error). The files the app
writes and receives are kept in explorer.files."""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
import warnings
from abc import ABCMeta
from collections.abc import Callable

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
