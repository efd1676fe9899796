"""One base for every model class of the library: how a model is saved to a folder, loaded
from a folder, a shipped name or a Hugging Face Hub repo, and pushed to the Hub.

A model class (:class:`vqvae.VQVAE`, :class:`vqvae.CodePrior`) is an ``nn.Module`` built from
one config dataclass, and names its two files as class attributes. Its folder holds
safetensors weights beside a JSON config; loading never unpickles, checks the config field by
field, and compares the weights' shapes with the config on the meta device before anything
is allocated, so a crafted config (a huge codebook, a 16384-wide prior) fails in
milliseconds with a ValueError instead of allocating gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch

from . import checkpoint, hub


class _ShapesOnly(torch.overrides.TorchFunctionMode):
    """Inside ``torch.device("meta")``: build a module for its shapes alone, skipping the
    random initialisers. Nothing is drawn for shapes, and ``normal_`` has no meta kernel:
    on the meta device it imports torch's Python references (~900 modules, 2 s)."""

    _INITIALISERS = frozenset(
        ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
         "xavier_uniform_", "xavier_normal_", "orthogonal_")
    )  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self._INITIALISERS:
            return args[0] if args else kwargs["tensor"]  # Tensor.normal_ or nn.init.normal_
        return func(*args, **kwargs)


class PretrainedMixin:
    """Saving, loading and Hub upload for an ``nn.Module`` built as ``cls(config)``.

    Subclasses set ``config_class`` (a dataclass with ``from_dict`` and ``to_json``),
    ``weights_name`` and ``config_name`` (the folder's two files), ``what`` and
    ``config_what`` (how messages name the model and its config), ``not_found_hint`` (ends
    the message for a missing model), ``card_tags`` (Hub tags besides the library's) and
    :meth:`_card_body`."""

    config_class: ClassVar[type]
    weights_name: ClassVar[str]
    config_name: ClassVar[str]
    what: ClassVar[str]
    config_what: ClassVar[str]
    not_found_hint: ClassVar[str] = ""
    card_tags: ClassVar[tuple[str, ...]] = ()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
    ):
        """Load a model written by :meth:`save_pretrained` from ``source``: a folder, the name
        of a shipped model (``"mnist"``) or a Hugging Face Hub repo id (``"org/name"``), in
        the order :func:`vqvae.hub.resolve` documents. ``revision``, ``cache_dir`` and
        ``local_files_only`` apply to a Hub repo (``HF_HUB_OFFLINE=1`` is honoured too).
        Returns the model, float32, in eval mode on ``device``. Never unpickles.

        Raises FileNotFoundError (an OSError) when no source holds the files, OSError when
        the Hub cannot be reached, ValueError when the config is not a valid config (bad
        types or ranges, an unknown ``format_version``) or the weights file is unreadable or
        does not match it. The tensor shapes are checked against the file's header before
        anything is allocated."""
        folder = hub.resolve(
            source,
            (cls.weights_name, cls.config_name),
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            what=cls.what,
            hint=cls.not_found_hint,
        )
        return cls._from_folder(folder).to(device).eval()

    @classmethod
    def _from_folder(cls, folder: Path):
        config_path, weights_path = folder / cls.config_name, folder / cls.weights_name
        try:
            config = cls.config_class.from_dict(checkpoint.read_config_json(config_path))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{config_path} is not a valid {cls.config_what}: {e}") from e
        mismatch = f"the weights in {weights_path} do not match {config_path} (was one replaced?)"
        # Shapes the config implies, from a model on the meta device (no memory), against
        # the header: a config that asks for a huge model fails here, not after allocating.
        with torch.device("meta"), _ShapesOnly():
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        stored = checkpoint.read_weight_shapes(weights_path)
        problems = [f"missing {k}" for k in expected if k not in stored]
        problems += [f"unexpected {k}" for k in stored if k not in expected]
        problems += [
            f"{k} is {stored[k]} in the file, {expected[k]} by the config"
            for k in expected
            if k in stored and stored[k] != expected[k]
        ]
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise ValueError(f"{mismatch}: {shown}")
        state = checkpoint.read_weights(weights_path)
        model = cls(config)
        # Parameters stored in float16 are widened to the model's float32 by load_state_dict.
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # a dtype that cannot be copied, say
            raise ValueError(f"{mismatch}: {e}") from e
        return model

    # -- saving --------------------------------------------------------------------------
    def save_pretrained(self, directory, dtype: str = "float32") -> None:
        """Write the weights (``weights_name``, safetensors) and the config (``config_name``,
        JSON) into ``directory``, each atomically (a crash leaves no half file).

        ``dtype="float16"`` stores the parameters in half precision, which halves the file;
        the buffers (a VQ-VAE's EMA statistics and restart counters) keep their dtype so
        training can go on from the file. :meth:`from_pretrained` always gives float32."""
        cast = checkpoint.check_weights_dtype(dtype)
        params = {name for name, _ in self.named_parameters()}
        state = {
            k: (v.detach().to(cast) if k in params else v.detach()).cpu().contiguous()
            for k, v in self.state_dict().items()
        }
        checkpoint.write_pretrained(
            directory,
            state,
            self.config.to_json(),
            dtype=dtype,
            weights_name=self.weights_name,
            config_name=self.config_name,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        dtype: str = "float32",
        card: str | None = None,
        metrics: dict | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Upload this model to the Hugging Face Hub model repo ``repo_id`` (created if it
        does not exist): the files of :meth:`save_pretrained` (in ``dtype``) and a
        ``README.md`` model card whose Hub metadata names the library (``vqvae``), tags, the
        training dataset when the model is named after one (``mnist``, ``fashion-mnist``,
        ``cifar10``) and ``metrics`` (name -> value, also shown in the card). ``card`` is
        the card's Markdown body (default: a short one with the loading code). Other files in
        the repo are kept, so a model and its prior can share one repo (push the prior last:
        its card loads both). Returns the commit's URL. Needs a Hub token (``token``, or
        ``hf auth login``)."""
        trained_on = hub.DATASETS.get(self._card_dataset_name())
        text = hub.model_card(
            self._card_body(repo_id) if card is None else card,
            datasets=[trained_on] if trained_on else [],
            metrics=metrics,
            tags=hub.CARD_TAGS + self.card_tags,
        )
        return hub.push_folder(
            lambda folder: self.save_pretrained(folder, dtype=dtype),
            repo_id,
            card=text,
            private=private,
            token=token,
            commit_message=commit_message,
        )

    def _card_dataset_name(self) -> str:
        """The name a model card looks its dataset up by (see :data:`vqvae.hub.DATASETS`)."""
        raise NotImplementedError

    def _card_body(self, repo_id: str) -> str:
        """The default Markdown body of this model's card on the Hub repo ``repo_id``."""
        raise NotImplementedError
