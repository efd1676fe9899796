"""The README's library snippet is run as written, so the README cannot drift from the API."""

import re
from pathlib import Path

from hub_helpers import COMMIT_A, fake_uploads, hub_cache, offline_hub

README = Path(__file__).parent.parent / "README.md"


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next level-2 heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_library_snippet_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _section(README.read_text(), "The library"), re.S)
    assert blocks, "README's 'The library' section has no python block"
    monkeypatch.chdir(tmp_path)  # the snippet saves a model into the working directory
    # push_to_hub stops at the Hub client, whose upload lands in an offline Hub cache
    offline_hub(monkeypatch, tmp_path / "hub-cache")
    fake_uploads(
        monkeypatch,
        lambda repo_id, folder, _: hub_cache(tmp_path / "hub-cache", repo_id, folder, COMMIT_A),
    )
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    # what the first snippet's comments promise
    assert tuple(namespace["codes"].shape) == (4, 7, 7)
    assert tuple(namespace["recon"].shape) == (4, 1, 28, 28)
    assert tuple(namespace["frames"].shape) == (16, 1, 28, 28)
    assert (tmp_path / "my-model" / "model.safetensors").is_file()
    for code in blocks[1:]:  # the Hub; the prior and the codec, on the shipped mnist model
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["mine"].config == namespace["new"].config  # pushed, then loaded
    assert tuple(namespace["codes"].shape) == (16, 7, 7)
    assert tuple(namespace["bits"].shape) == (16,)
    assert len(namespace["files"]) == 16
    assert tuple(namespace["decoded"].shape) == (16, 1, 28, 28)
