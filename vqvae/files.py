"""Crash-safe file writes: every file the library, training and the app write goes through
``atomic_write``, so a kill, a full disk or an exception never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, mode: str = "wb") -> Iterator:
    """Open a uniquely named temporary file beside ``path``; when the block ends without an
    error it is flushed to disk and renamed over ``path``, otherwise it is removed. Readers see
    the old file or the new one, never a mix; concurrent writers never share a temp file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are ordinary, shareable ones
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path, obj, **dumps_kw) -> None:
    """``json.dumps(obj)`` into ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, **dumps_kw))
