"""The files the app hands out and receives: each session's outputs in a folder of its own,
trimmed only by that session's traffic or by age, never by another client's; uploads refused
while Gradio's cache is full; output images written once and whole, never rewritten while
they are served."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import PIL.Image

from . import settings
from .fairness import client_address

log = logging.getLogger("vqvae.app")
# An output image's PIL info key: the name save_pil_to_cache stores it under (see named)
NAME_KEY = "vqvae-output-name"


def file_stem(path) -> str | None:
    """A download's name from an input file's path: its stem in safe characters (at most
    64); None for what is no path or has no usable name."""
    if not isinstance(path, (str, Path)):
        return None
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._")[:64]
    return stem or None


def named(image: PIL.Image.Image, source) -> PIL.Image.Image:
    """``image``, marked to be stored under the name of the file ``source`` (a path; an
    array or a drawing leaves it unnamed) when Gradio sends it out: its download keeps the
    input's name, and so does a .vqz made from it (photo.png -> photo.png, photo.vqz)."""
    stem = file_stem(source)
    if stem:
        image.info[NAME_KEY] = stem
    return image


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

    def new(self, suffix: str, session: str | None = None, *, name: str | None = None) -> str:
        """A fresh, empty file for a result of the current event's session (``session``: a
        folder name, default :func:`session_key`), named ``name + suffix`` (what a download
        is saved as; in a folder of its own) or at random. Trims that session's older files
        to its budget and everyone's expired files first; gr.Error if all sessions together
        are over the total budget."""
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
            if name:
                path = Path(tempfile.mkdtemp(dir=folder)) / f"{Path(name).name}{suffix}"
                path.touch()
            else:
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
        if path.parent.parent != self.folder:  # a named file's own folder
            try:
                path.parent.rmdir()
            except OSError:
                pass

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
    that lifetime even if no event ever uses it.

    Gradio's upload route names no session, so the share of one client is counted by its
    address (:func:`explorer.fairness.client_address`, X-Forwarded-For behind a Space's
    proxy): the bytes it uploaded within the files' ``lifetime`` stay under ``per_address``
    (429 beyond), so one machine cannot fill the space every visitor's uploads share.
    Loopback clients (this machine, or a local proxy hiding every client) are not counted."""

    def __init__(
        self, app, files: OutputFiles, *, per_address: int = settings.UPLOAD_PER_ADDRESS,
        lifetime: float = settings.FILE_LIFETIME,
        trust_forwarded_for: bool = settings.TRUST_FORWARDED_FOR,
    ):  # fmt: skip
        self.app = app
        self.files = files
        self._used = (0.0, 0)  # (when measured, bytes): one walk a second at most
        self.per_address, self.lifetime = per_address, lifetime
        self.trust_forwarded_for = trust_forwarded_for
        # address -> {minute: bytes uploaded in it}: at most lifetime / 60 + 1 numbers an
        # address, however many uploads it sends
        self._by_address: dict[str, dict[int, int]] = {}

    def address_share(self, address: str, now: float) -> int:
        """Bytes ``address`` uploaded within the lifetime (``now``: time.monotonic()), to
        the minute; minutes older than that are dropped, and addresses left with none."""
        oldest = int((now - self.lifetime) // 60)
        for key, minutes in list(self._by_address.items()):
            for m in [m for m in minutes if m < oldest]:
                del minutes[m]
            if not minutes:
                del self._by_address[key]
        return sum(self._by_address.get(address, {}).values())

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
            from starlette.requests import Request
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
            address = client_address(Request(scope), self.trust_forwarded_for)
            now = time.monotonic()
            if address is not None and self.address_share(address, now) + size > self.per_address:
                log.warning("upload refused: address %s over its share", address)
                reason = (
                    f"Your uploads of the last {self.lifetime / 60:.0f} minutes take "
                    f"{self.per_address // 2**20} MB of the server's space; try again later."
                )
                await PlainTextResponse(reason, status_code=429)(scope, receive, send)
                return
            if address is not None:
                minutes = self._by_address.setdefault(address, {})
                minutes[int(now // 60)] = minutes.get(int(now // 60), 0) + size
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
    reader ever sees it half-written. Identical results are still stored once. An image
    marked by :func:`named` is stored under its name (without the mark in the file)."""
    from gradio import processing_utils

    if NAME_KEY in img.info:  # named(): the name goes into the path, not the file
        name = img.info[NAME_KEY]
        img = img.copy()
        del img.info[NAME_KEY]
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
