"""Codebook statistics for visualisation: UMAP coordinates and usage, stored beside a model
in ``codebook.json`` so apps never run UMAP at start-up."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .files import write_json_atomic

CODEBOOK_INFO = "codebook.json"


def umap_coords(codebook: torch.Tensor, dims: int = 2, seed: int = 0) -> np.ndarray:
    """UMAP projection (K, dims) of code vectors (K, D), umap-learn, Euclidean metric,
    15 neighbours. Deterministic for a given seed."""
    import umap  # umap-learn; imported lazily, it is slow to import

    x = codebook.detach().float().cpu().numpy()
    reducer = umap.UMAP(
        n_components=dims,
        n_neighbors=min(15, len(x) - 1),
        min_dist=0.1,
        random_state=seed,
        n_jobs=1,
    )
    return reducer.fit_transform(x).astype(np.float32)


def codebook_info(model, usage: torch.Tensor | None = None) -> dict:
    """``{"usage": [K], "umap_2d": [[x, y]] * K, "umap_3d": [[x, y, z]] * K}``."""
    K = model.config.codebook_size
    cb = model.codebook
    return {
        "usage": (usage if usage is not None else torch.zeros(K)).long().tolist(),
        "umap_2d": umap_coords(cb, 2).round(4).tolist(),
        "umap_3d": umap_coords(cb, 3).round(4).tolist(),
    }


def load_codebook_info(model, model_dir=None, cache_dir=None) -> dict:
    """The model's ``codebook.json`` if its folder has one; otherwise compute it once and
    cache it on disk (keyed by a hash of the codebook), so it is never recomputed per start."""
    if model_dir is not None and (Path(model_dir) / CODEBOOK_INFO).is_file():
        return json.loads((Path(model_dir) / CODEBOOK_INFO).read_text())
    from .data import cache_dir as default_cache

    digest = hashlib.sha1(model.codebook.detach().cpu().numpy().tobytes()).hexdigest()[:16]
    path = Path(cache_dir or default_cache() / "codebook") / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    info = codebook_info(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, info)
    return info
