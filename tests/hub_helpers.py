"""Shared by the Hub and README tests: a Hugging Face Hub cache laid out as huggingface_hub
lays it out, read offline through its real code."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import huggingface_hub.constants

COMMIT_A = "a" * 40


def offline_hub(monkeypatch, cache: Path) -> None:
    """No network: HF_HUB_OFFLINE as huggingface_hub reads it (at import, so its constant
    too), and ``cache`` as the default Hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def hub_cache(cache: Path, repo_id: str, folder: Path, commit: str, ref: str | None = "main"):
    """Lay ``folder``'s files out as huggingface_hub's cache holds a download of ``repo_id``
    at ``commit``: blobs named by content, snapshots/<commit>/ linking them, refs/<ref>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in Path(folder).iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def fake_uploads(monkeypatch, on_upload) -> None:
    """HfApi.create_repo and HfApi.upload_folder stop at the Hub client: create_repo records
    its arguments in ``on_upload.create_repo``, upload_folder calls ``on_upload(repo_id,
    folder, kwargs)`` while the folder still exists and returns a commit URL."""

    def create_repo(self, repo_id, **kw):
        on_upload.create_repo = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        on_upload(repo_id, Path(folder_path), kw)
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT_A}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
