"""Where a saved model comes from, and how one goes up to the Hugging Face Hub.

:func:`resolve` turns a *source* into a local folder holding the files asked for. The order,
first match wins:

1. a folder that exists and holds every file (a ``str`` or ``os.PathLike`` path);
2. the name of a shipped model (``"mnist"``): ``vqvae``'s own ``pretrained/NAME/``, then
   ``./pretrained/NAME/`` in the working directory;
3. a folder that exists but lacks a file: FileNotFoundError naming the file (never a Hub
   look-up for a local folder);
4. a ``str`` of the form ``"org/name"``: a Hugging Face Hub model repository, fetched with
   :func:`huggingface_hub.snapshot_download` (only the files asked for, downloaded once into
   the Hub cache; ``HF_HUB_OFFLINE=1`` and ``local_files_only`` read the cache alone);
5. anything else: FileNotFoundError listing the shipped names.

So a local folder called ``mnist`` that holds no model does not hide the shipped ``mnist``,
and a relative path such as ``runs/mnist`` is read from disk when it exists; when it does
not, it has the form of a repo id and is looked up on the Hub.

>>> folder = resolve("mnist", ("model.safetensors", "config.json"))
>>> folder = resolve("org/name", ("prior.safetensors", "prior.json"), revision="v1")
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import checkpoint

# Hub repo ids: "org/name", each part letters, digits, "-", "_" or "." (the Hub's own rule,
# which huggingface_hub checks again, also forbids "--" and ".." and caps the length at 96).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# The Hub's ids of the datasets the shipped models (and presets) are named after: a model
# card links them. Other names link none.
DATASETS = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
}
CARD_TAGS = ("vqvae", "vector-quantization", "image-compression", "pytorch", "safetensors")


def _holds(folder: Path, filenames: Sequence[str]) -> bool:
    return all((folder / f).is_file() for f in filenames)


def shipped_names(filenames: Sequence[str] = (checkpoint.WEIGHTS_NAME,)) -> list[str]:
    """Names of the shipped models whose folder holds every file of ``filenames``, sorted
    (``["cifar10", "fashion-mnist", "mnist"]`` for the model files)."""
    root = checkpoint.PRETRAINED_DIR
    return sorted(p.name for p in root.glob("*") if _holds(p, filenames)) if root.is_dir() else []


def _shipped(name: str, filenames: Sequence[str]) -> Path | None:
    """The folder of the shipped model ``name`` holding ``filenames``, or None."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        return None
    for root in (checkpoint.PRETRAINED_DIR, Path.cwd() / "pretrained"):
        if _holds(root / name, filenames):
            return root / name
    return None


def resolve(
    source: str | os.PathLike,
    filenames: Sequence[str],
    *,
    optional: Sequence[str] = (),
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    what: str = "model",
    hint: str = "",
) -> Path:
    """The local folder holding every file of ``filenames`` for ``source``: a folder, a
    shipped model's name or a Hub repo id, in the order of this module's docstring. Files in
    ``optional`` are fetched too from a Hub repo that has them (an app's extras: a prior, a
    model card); the caller checks whether the folder holds them.

    ``revision`` (a branch, tag or commit), ``cache_dir`` (default: the Hub cache,
    ``HF_HUB_CACHE``) and ``local_files_only`` apply to a Hub repo id only. ``what`` names
    the thing in messages ("model", "prior"); ``hint`` ends the not-found message.

    Raises FileNotFoundError (an OSError) when no source holds the files, a Hub repository,
    revision or file does not exist, or it is not in the cache while offline; OSError when the
    Hub cannot be reached or refuses; ValueError for a malformed repo id."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a {what} source must be a str or a path, got {type(source).__name__}")
    path = Path(source)
    name = os.fspath(source)
    if path.is_dir() and _holds(path, filenames):
        return path
    shipped = _shipped(name, filenames) if isinstance(source, str) else None
    if shipped is not None:
        return shipped
    files = " and ".join(filenames)
    if path.is_dir():
        missing = ", ".join(f for f in filenames if not (path / f).is_file())
        raise FileNotFoundError(f"no {what} at {name!r}: the folder has no {missing}.{hint}")
    if isinstance(source, str) and _REPO_ID.fullmatch(source):
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return _from_hub(source, filenames, optional, hub, what, hint)
    raise FileNotFoundError(
        f"no {what} at {name!r}: expected a folder with {files}, the name of a shipped "
        f"{what} (available: {', '.join(shipped_names(filenames)) or 'none'}) or a Hugging "
        f"Face Hub repo id of the form 'org/name'.{hint}"
    )


def _from_hub(repo_id, filenames, optional, hub: dict, what, hint) -> Path:
    """snapshot_download of ``filenames`` and ``optional`` from the model repo ``repo_id``
    (``hub``: its revision, cache_dir and local_files_only), with its errors said in this
    library's words."""
    # imported here: loading a folder or a shipped model never imports huggingface_hub
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id!r}" + (f" (revision {hub['revision']!r})" if hub["revision"] else "")
    try:
        patterns = list(filenames) + list(optional)
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, **hub))
    except HFValidationError as e:
        raise ValueError(f"{repo_id!r} is not a valid Hugging Face Hub repo id: {e}") from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        # EntryNotFoundError covers the cache-only miss (offline or local_files_only)
        raise FileNotFoundError(
            f"no {what} at {at}: not a local folder or a shipped {what} (available: "
            f"{', '.join(shipped_names(filenames)) or 'none'}), and not on the Hugging Face "
            f"Hub or in its cache: {(str(e).splitlines() or [type(e).__name__])[0]}{hint}"
        ) from e
    except HfHubHTTPError as e:  # a gated repo, a server error
        raise OSError(f"the Hugging Face Hub refused {at}: {e}") from e
    except OSError:
        raise
    except Exception as e:  # a connection lost mid-download raises the HTTP client's types
        raise OSError(f"could not download {at} from the Hugging Face Hub: {e}") from e
    missing = [f for f in filenames if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no {what} at the Hugging Face Hub repo {at}: it has no {', '.join(missing)}.{hint}"
        )
    return folder


# -- uploading ---------------------------------------------------------------------------
def model_card(body: str, *, datasets=(), metrics=None, tags=CARD_TAGS) -> str:
    """A model card: ``body`` (Markdown) under the Hub's YAML metadata (library_name vqvae,
    license, ``tags``, ``datasets``, the names of ``metrics``; a dict of name -> value is also
    listed in the card)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="vqvae",
        license="mit",
        tags=list(tags),
        datasets=list(datasets) or None,
        metrics=sorted(metrics) if metrics else None,
        pipeline_tag="image-to-image",
    )
    if metrics:
        rows = "\n".join(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items()
        )
        body = f"{body.rstrip()}\n\n| metric | value |\n|---|---|\n{rows}\n"
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"))


def push_folder(
    write, repo_id: str, *, card: str, private=None, token=None, commit_message=None
) -> str:
    """Create the Hub model repo ``repo_id`` (if it does not exist) and upload a folder into
    it: ``write(folder)`` fills a temporary folder, ``card`` becomes its ``README.md``. Files
    already in the repo that the folder does not hold are kept. Returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vqvae-push-") as tmp:
        write(Path(tmp))
        (Path(tmp) / "README.md").write_text(card)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message or f"Upload {', '.join(sorted(os.listdir(tmp)))}",
        )
    return str(info)


def resolve_pretrained(name_or_dir, **hub) -> Path:
    """The folder a VQ-VAE source refers to (:func:`resolve` for ``model.safetensors`` and
    ``config.json``); FileNotFoundError with the options."""
    return resolve(name_or_dir, (checkpoint.WEIGHTS_NAME, checkpoint.CONFIG_NAME), **hub)
