"""What every tab's handlers share: the models, the output files, the coder's lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .files import OutputFiles
from .store import ModelStore


@dataclass
class Context:
    models: ModelStore
    files: OutputFiles
    # The coder pins torch to one thread while it runs (its floats must not depend on the
    # split); one coding at a time, so no other coding restores the count meanwhile.
    codec_lock: threading.Lock = field(default_factory=threading.Lock)
