"""Options as a dataclass, one ``--flag`` per field: how both trainers turn a config into a CLI.

A field is declared with ``option(default, help)``; ``make_parser`` gives every field a flag
(bools as ``--x`` / ``--no-x``) with its help, plus ``--resume``; ``given`` reads back which
flags were set; ``resumed`` continues a run with its saved options, refusing any flag that
would change one a resume may not change; ``command_flags`` writes a config back as flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from .runs import TRAIN_CONFIG, RunError, read_train_config


class TrainError(RuntimeError):
    """A problem with the user's options or the run (printed as one clear message)."""


def option(default, help: str, *, resume: bool = False, choices=None):
    """A config field with its --flag's help text; ``resume=True`` marks the options a
    ``--resume`` may change (the rest would change the run it continues, and are refused)."""
    return dataclasses.field(
        default=default, metadata=dict(help=help, resume=resume, choices=choices)
    )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def fields(config: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config)}


def resumable(config: type) -> list[str]:
    """The fields a ``--resume`` may change."""
    return [name for name, f in fields(config).items() if f.metadata["resume"]]


def bool_flag(name: str, value: bool) -> str:
    return flag(name) if value else "--no-" + flag(name)[2:]


def _flag_type(config: type, name: str):
    """int, float, str or bool: the field's annotation without its ``| None``."""
    hint = typing.get_type_hints(config)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def make_parser(
    config: type, prog: str, description: str, defaults: dict[str, str]
) -> argparse.ArgumentParser:
    """The CLI of ``config``: one flag per field, plus --resume. ``defaults`` replaces the
    "(default: ...)" of the fields whose default comes from elsewhere (a preset)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--channels" must not silently mean "--channels-last"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly; only "
        + ", ".join(flag(n) for n in resumable(config))
        + " may change",
    )
    # every default is None: given() then knows which flags were set
    for name, f in fields(config).items():
        default = f.default
        if name in defaults:
            note = defaults[name]
        elif default is None:
            note = ""
        elif isinstance(default, bool):
            note = f" (default: {bool_flag(name, default)})"
        else:
            note = f" (default: {default})"
        kind, help_text = _flag_type(config, name), f.metadata["help"] + note
        if kind is bool:
            p.add_argument(
                flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            choices = f.metadata["choices"]
            p.add_argument(
                flag(name),
                type=kind,
                default=None,
                choices=sorted(choices) if choices is not None else None,
                help=help_text,
            )
    return p


def at_least_one(cfg, names) -> None:
    """Refuse a value below 1 of the fields ``names`` (step intervals, counts)."""
    for k in names:
        if getattr(cfg, k) < 1:
            hint = " (use a large number to make it rare)" if k.endswith("_every") else ""
            raise TrainError(f"{flag(k)} must be >= 1{hint}")


def given(config: type, args: argparse.Namespace) -> dict:
    """The fields of ``config`` set by a flag."""
    names = fields(config)
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def resumed(config: type, out: Path, given: dict) -> dict:
    """The saved options of the run in ``out`` with the ``given`` flags a resume may change
    applied. A flag that would change anything else is refused: the run continues as it
    started."""
    saved = read_train_config(out)
    if saved is None:
        raise RunError(f"cannot resume: {out} is not a run folder (no {TRAIN_CONFIG})")
    names = fields(config)
    values = {k: v for k, v in saved.items() if k in names}
    values["out"] = str(out)  # the folder resumed, also when it was moved since
    refused = [
        f"{flag(k)} {v} (the run has {values.get(k, names[k].default)})"
        for k, v in given.items()
        if not names[k].metadata["resume"] and v != values.get(k, names[k].default)
    ]
    if refused:
        raise TrainError(
            f"--resume continues {out} with the options it started with; it cannot change "
            f"{', '.join(refused)}. A resume may change only "
            f"{', '.join(flag(n) for n in resumable(config))}; to change the others, start a "
            f"new run with another --out."
        )
    values.update({k: v for k, v in given.items() if names[k].metadata["resume"]})
    return values


def command_flags(cfg, base, always: tuple[str, ...]) -> list[str]:
    """Flags that turn the config ``base`` into ``cfg``: the ``always`` fields and every
    other field whose value differs from ``base``'s (never --out)."""
    args: list[str] = []
    for name in fields(type(cfg)):
        value = getattr(cfg, name)
        if name == "out" or (name not in always and value == getattr(base, name)):
            continue
        if isinstance(value, bool):
            args.append(bool_flag(name, value))
        else:
            args += [flag(name), str(value)]
    return args
