"""What one request, and one session, may make the server hold: request bodies are capped
before any route reads them, and the state Gradio keeps per session is dropped once no page
holds that session open.

Both plug into Gradio's own FastAPI app through ``demo.launch(app_kwargs=...)``:
:func:`app_kwargs` gives the middleware and the lifespan task that does the sweeping."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import sys
import time
from collections import Counter

from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from . import settings

log = logging.getLogger("vqvae.app")

# Multipart uploads are bounded by Gradio itself (max_file_size, the drawing pad's guard);
# these are the only routes that read one.
MULTIPART_ROUTES = ("/gradio_api/upload", "/gradio_api/component_server")
HEARTBEAT = "/gradio_api/heartbeat/"


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _route(scope) -> str:
    """The path within the app (a Space may serve it under a root path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/")


class BodyCap:
    """ASGI middleware: a request body over ``max_bytes`` is answered ``413`` before any route
    parses it (FastAPI would read and parse all of it on the event loop, stalling every user).
    A declared Content-Length is checked at once; a chunked body is counted as it arrives and
    buffered up to the cap, then handed on. Multipart uploads to :data:`MULTIPART_ROUTES`
    keep Gradio's own limits."""

    def __init__(self, app, max_bytes: int = settings.MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        kind = (_header(scope, b"content-type") or "").lower()
        if kind.startswith("multipart/form-data") and _route(scope) in MULTIPART_ROUTES:
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then http.disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = PlainTextResponse(
            f"Request body too large (limit {self.max_bytes} bytes).", status_code=413
        )
        await response(scope, receive, send)


class LiveSessions:
    """ASGI middleware counting the heartbeat connections each session holds open: a page
    keeps one open for as long as it is shown (API clients open none)."""

    def __init__(self, app, counts: Counter):
        self.app = app
        self.counts = counts

    async def __call__(self, scope, receive, send):
        route = _route(scope) if scope["type"] == "http" else ""
        if not route.startswith(HEARTBEAT):
            return await self.app(scope, receive, send)
        session = route[len(HEARTBEAT) :]
        self.counts[session] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.counts[session] -= 1
            if self.counts[session] <= 0:
                del self.counts[session]


def stale_sessions(app, live: Counter, idle: float, now: float | None = None) -> list[str]:
    """Sessions of Gradio's state holder with no heartbeat open, no event queued or running,
    and no use for ``idle`` seconds."""
    holder = app.state_holder
    busy = {e.session_hash for e in list(app.get_blocks()._queue.event_ids_to_events.values())}
    now = time.time() if now is None else now
    stale = []
    for session, used in list(holder.time_last_used.items()):
        if live.get(session) or session in busy:
            continue
        if now - used.timestamp() > idle:
            stale.append(session)
    return stale


def drop_sessions(app, sessions: list[str]) -> None:
    """Forget what Gradio keeps for ``sessions``: their gr.State values, the last value of
    each input and the components their events updated, and the messages of finished events
    they never read. A session that comes back starts afresh. The freed heap is handed back
    to the system (glibc keeps it otherwise: 200 requests of 1 MB leave ~200 MB resident)."""
    holder = app.state_holder
    queue = app.get_blocks()._queue
    with holder.lock:
        for session in sessions:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
            queue.pending_messages_per_session.pop(session, None)
            queue.pending_event_ids_session.pop(session, None)
    if _malloc_trim is not None:
        _malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_libc = _glibc() if sys.platform.startswith("linux") else None
_malloc_trim = _libc.malloc_trim if _libc is not None else None
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_freed_memory() -> None:
    """Have glibc map every allocation of ``MMAP_THRESHOLD`` bytes or more on its own, and
    unmap it when freed. By default glibc raises that threshold to the largest block freed
    (up to 32 MB), so request bodies and the tables parsed from them land in the heap, between
    objects that live on, and the heap cannot shrink: 200 requests of 1 MB left 200 MB
    resident after everything they made was freed."""
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, settings.MMAP_THRESHOLD)


def session_sweeper(live: Counter, idle: float, every: float):
    """A FastAPI lifespan: every ``every`` seconds, drop the sessions idle for ``idle``
    seconds without a live page (Gradio keeps them until 10,000 sessions are stored, or an
    hour after their page closed)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def sweep():
            while True:
                await asyncio.sleep(every)
                try:
                    stale = stale_sessions(app, live, idle)
                    if stale:
                        drop_sessions(app, stale)
                        log.info("dropped %d idle sessions", len(stale))
                except Exception:  # noqa: BLE001  (the sweep must go on)
                    log.exception("session sweep failed")

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def app_kwargs(
    max_body: int = settings.MAX_BODY_BYTES,
    idle: float = settings.SESSION_IDLE_SECONDS,
    every: float = settings.SESSION_SWEEP_SECONDS,
) -> dict:
    """``demo.launch(app_kwargs=...)``: the body cap, the heartbeat counter, the sweeper."""
    live: Counter = Counter()
    return dict(
        middleware=[Middleware(BodyCap, max_bytes=max_body), Middleware(LiveSessions, counts=live)],
        lifespan=session_sweeper(live, idle, every),
    )
