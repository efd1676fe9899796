"""The idioms every tab uses to declare its events and outputs.

Outputs are bound by name: an event's result is a NamedTuple, and :func:`bind` lists the
components in the order of its fields, from keyword arguments named after them, so a field
can never fill the wrong component. Public events (the API) carry their api_name; every
other event is private and named explicitly, so the API names never get suffixes."""

from __future__ import annotations

import time
from typing import NamedTuple

import gradio as gr

from .fairness import EXPENSIVE_ID
from .settings import EXPENSIVE_CONCURRENCY

PIX = ["pixelated"]
# Code numbers reach the handlers unrounded (Gradio's rounding fails on inf and NaN with an
# unclear message); the handlers check them. select_model sets the model's maximum.
CODE_NUMBER = dict(precision=None, minimum=0)
# Class choices change with the model; the handlers check the class (Gradio would check it
# against the choices the page was built with).
CLASS_CHOICE = dict(allow_custom_value=True, min_width=140)
# Events that run a model share one queue of CONCURRENCY slots (Gradio gives every event its
# own by default, so a busy app would run 2 x (number of events) at once); quick ones that
# only pick or pass values on keep their own, so the page stays responsive under load.
# Expensive events (the prior, GIFs, the codec's encodes) have a queue of their own with
# EXPENSIVE_CONCURRENCY slots, so the cheap ones never wait behind them; explorer.fairness
# lets a client hold one of them at a time.
MODEL = dict(concurrency_id="model")
EXPENSIVE = dict(concurrency_id=EXPENSIVE_ID, concurrency_limit=EXPENSIVE_CONCURRENCY)


def public(name: str, *, expensive: bool = False) -> dict:
    """Options of an API event (it runs a model; ``expensive``: in the expensive queue)."""
    return dict(api_name=name, **(EXPENSIVE if expensive else MODEL))


def private(name: str, *, quick: bool = False, expensive: bool = False) -> dict:
    """Options of an event the page uses but the API does not list; ``quick``: it runs no
    model, so it does not wait for the model queue; ``expensive``: as for :func:`public`."""
    slot = {} if quick else EXPENSIVE if expensive else MODEL
    return dict(api_name=name, api_visibility="private", **slot)


def bind(result: type[NamedTuple], **components) -> list:
    """The output components of an event returning ``result``, in its fields' order; the
    keyword names must be exactly its fields."""
    fields = result._fields
    if set(components) != set(fields):
        missing = [f for f in fields if f not in components]
        extra = [k for k in components if k not in fields]
        raise TypeError(f"{result.__name__} outputs: missing {missing}, unknown {extra}")
    return [components[f] for f in fields]


def skip(result: type[NamedTuple]):
    """A result that changes none of its components."""
    return result(*(gr.skip() for _ in result._fields))


def start() -> None:
    """Nothing: the body of an event that only starts what follows it (a typed mark or the
    surprise box redraws the code map). It has no inputs and no outputs."""


def open_tab(evt: gr.SelectData) -> str:
    """A tab chosen -> its label (the state :func:`for_open_tab` reads)."""
    return str(evt.value)


def for_open_tab(fn, inputs: list, outputs: list, *, tab: str, model, shown_tab, **options):
    """-> ``refresh(dep)``: after event ``dep``, ``fn(*inputs)`` fills ``outputs`` (on the
    tab labelled ``tab``) if that tab is the open one (``shown_tab``, a state holding the
    open tab's label, :func:`open_tab`) and they show another model's result than the
    chosen one (``model``). What a model switch would compute for a tab out of view (an
    atlas of K tiles, a GIF of two photos) waits until the tab is opened; refresh the tab's
    opening too so it catches up. The check is a quick event of its own: only a needed
    ``fn`` joins the queue of ``options`` (:func:`private`), so a page opened on another
    tab sends no such job at all."""
    shown = gr.State()  # the model whose result the outputs hold
    wanted = gr.State()  # a new value each time the outputs need fn's result

    def check(model_name: str, open_now: str, shown_now):
        if open_now != tab or shown_now == model_name:
            return gr.skip()
        return time.monotonic_ns()

    def run(model_name: str, *args):
        out = fn(*args)
        return (*(out if len(outputs) > 1 else (out,)), model_name)

    wanted.change(run, [model, *inputs], [*outputs, shown], **options)
    name = options.get("api_name", "lazy")

    def refresh(dep) -> None:
        dep.then(check, [model, shown_tab, shown], wanted, **private(f"{name}_check", quick=True))

    return refresh
