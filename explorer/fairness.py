"""A fair queue for a public app: no client fills the queue with expensive jobs.

Gradio's queue limits its total size, not what one client may put in it. Expensive events
(those declared with :data:`explorer.ui.EXPENSIVE`, in the concurrency group
:data:`EXPENSIVE_ID`) are checked when they join the queue (``POST /gradio_api/queue/join``):
a session may hold ``per_session`` of them, queued or running (its next one waits at the
door for a while), a client address ``per_address``, and all clients together ``total``.
A refused join is answered ``429 Too Many Requests`` (a client over its share) or ``503
Service Unavailable`` (the expensive queue is full), with a sentence saying why; the page
shows it as an error.

Sessions are named by the client (``session_hash``): anyone can make up new ones. The
address limit is what holds a single machine back; it needs the client's real address,
which behind a proxy is in ``X-Forwarded-For`` (see :func:`client_address`). Loopback peers
are not limited by address: they are this machine's owner, or a local proxy that hides
every client behind one address.

What is counted is Gradio's own record of the events queued or running
(``Queue.event_ids_to_events``), so nothing here can drift from the queue or grow.
"""

from __future__ import annotations

import asyncio
import ipaddress

from fastapi import HTTPException, Request

EXPENSIVE_ID = "expensive"  # the concurrency_id of the expensive events


def client_address(request: Request | None, trust_forwarded_for: bool) -> str | None:
    """The address a request came from, or None if it cannot be told apart from others
    (a loopback peer, no peer). ``trust_forwarded_for``: behind proxies that append the peer
    they saw to ``X-Forwarded-For`` (a Hugging Face Space): the client is the last public
    address in it (any after it are the host's own proxies; entries before it are whatever
    the client wrote, and never count), else its last entry."""
    if request is None:
        return None
    host = request.client.host if request.client else None
    if trust_forwarded_for and (forwarded := request.headers.get("x-forwarded-for")):
        hops = [_address(h) for h in reversed(forwarded.split(","))]
        hops = [h for h in hops if h is not None]
        host = str(next((h for h in hops if h.is_global), hops[0] if hops else host))
    address = _address(host)
    return None if address is None or address.is_loopback else str(address)


def _address(text: str | None):
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:  # "testclient", a unix socket, junk in a header: no address
        return None


class FairQueue:
    """Checks every join of an expensive event against the limits before Gradio's queue
    takes it. :func:`install` puts it in front of an app's queue.

    A session over its share waits at the door, up to ``wait`` seconds, for its job to
    finish (the page itself sends two when it opens: the first compression and the first
    interpolation); one such waiter per session, any other join over the share is refused
    at once."""

    def __init__(
        self, queue, *, per_session: int, per_address: int, total: int, wait: float,
        trust_forwarded_for: bool,
    ):  # fmt: skip
        self.queue = queue
        self.per_session, self.per_address, self.total = per_session, per_address, total
        self.wait, self.trust_forwarded_for = wait, trust_forwarded_for
        self._push = queue.push
        self._lock = asyncio.Lock()  # the check and Gradio's record of the event: one step
        self._waiting: set[str] = set()  # sessions with a join waiting at the door

    def expensive(self, fn_index) -> bool:
        fn = self.queue.blocks.fns.get(fn_index) if isinstance(fn_index, int) else None
        return fn is not None and fn.concurrency_id == EXPENSIVE_ID

    def refusal(self, session: str | None, address: str | None):
        """Why a new expensive job of ``session`` from ``address`` is refused, as (which
        limit: "session", "address" or "total", the answer), or None."""
        jobs = [
            e
            for e in list(self.queue.event_ids_to_events.values())
            if e.fn.concurrency_id == EXPENSIVE_ID
        ]
        what = "sampling, GIF or compression job"
        if session and sum(e.session_hash == session for e in jobs) >= self.per_session:
            return "session", HTTPException(
                429,
                f"You already have {self.per_session} {what} queued or running: wait for it "
                "to finish, then try again.",
            )
        if address is not None:
            mine = sum(client_address(e.request, self.trust_forwarded_for) == address for e in jobs)
            if mine >= self.per_address:
                return "address", HTTPException(
                    429,
                    f"Your address already has {self.per_address} {what}s queued or running: "
                    "wait for one to finish, then try again.",
                )
        if len(jobs) >= self.total:
            return "total", HTTPException(
                503, f"The app is busy: {self.total} {what}s are waiting. Try again in a minute."
            )
        return None

    async def push(self, body, request: Request, username=None):
        """Gradio's ``Queue.push``, after the limits for expensive events."""
        if not self.expensive(getattr(body, "fn_index", None)):
            return await self._push(body=body, request=request, username=username)
        session = body.session_hash
        address = client_address(request, self.trust_forwarded_for)
        deadline = asyncio.get_running_loop().time() + self.wait
        waiting = False
        try:
            while True:
                async with self._lock:
                    why = self.refusal(session, address)
                    if why is None:
                        return await self._push(body=body, request=request, username=username)
                limit, answer = why
                late = asyncio.get_running_loop().time() > deadline
                if limit != "session" or late or (not waiting and session in self._waiting):
                    raise answer
                waiting = True
                self._waiting.add(session)
                await asyncio.sleep(0.1)
        finally:
            if waiting:
                self._waiting.discard(session)


def install(demo, **limits) -> FairQueue:
    """Put a :class:`FairQueue` with ``limits`` (its keyword arguments) in front of
    ``demo``'s queue; after ``demo.queue()``, which makes the queue."""
    fair = FairQueue(demo._queue, **limits)
    demo._queue.push = fair.push
    return fair
