"""The expert interface: what the server needs from every plug-in.

An expert has a name, a version, a one-line description and the document
field it reads (``field = None``: the whole document, as a stdin/stdout script
reads it). It loads its model once (``load``) and turns a *batch* of field
values into a batch of opinions (``predict``). Everything else
(validation, batching, threads, RPC) is the server's job.

An expert that also learns from labelled examples sets ``learns = True`` and
implements ``learn`` (apply examples in order), ``state`` (what it has
learned so far) and ``checkpoint``/``restore`` (its model as bytes). The
server keeps the examples in a durable log and decides when to apply them.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence


#: Set before TensorFlow is first imported (unless the user set them): its C++
#: start-up lines (the oneDNN and CPU-feature banners, absl's "log messages
#: before absl::InitializeLog()" and tf.data's ``E0000 ... use_unbounded_threadpool``)
#: say nothing a user of expertd can act on. oneDNN's custom ops change results
#: only in the 7th digit; turning them off keeps inference and training quiet.
#: The experts file loader sets them before importing any expert, the user's included.
QUIET_TENSORFLOW = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ logging; call before ``import tensorflow``."""
    for key, value in QUIET_TENSORFLOW.items():
        os.environ.setdefault(key, value)


class ExpertError(Exception):
    """Raised by an expert for a problem with one input it was given."""


class Expert:
    """Base class for experts.

    Subclasses set ``version`` and ``description`` and implement ``predict``;
    ``load`` is where a model is read from disk (once, before serving).
    Options from the config file arrive as keyword arguments.
    """

    version: str = "0"
    description: str = ""
    #: The document field the expert reads; ``None``: it reads the whole document (a dict).
    field: str | None = "text"
    #: The Python type the field must have (``None`` accepts any JSON value).
    input_type: type | None = str
    #: JSON Schema of one opinion (a dict), or ``None`` when its shape is not fixed.
    #: ``experts()`` reports it; the bridge's OpenAPI document uses it, and the server
    #: holds every opinion to it (fresh outputs, and opinions a document carries before
    #: a chain reuses them): declare ``minimum``/``maximum`` where values have a range.
    opinion_schema: dict | None = None
    #: Whether ``learn`` is implemented (the server answers ``NotLearnable`` otherwise).
    learns: bool = False
    #: True if an opinion is a function of the input and ``version`` alone (no clock, no
    #: randomness, no learning): the server's ``cache_size`` then caches its opinions
    #: (``rpc_server.opinion_cache``); another expert is cached only if its entry asks.
    pure: bool = False
    #: The document field holding an example's target, for ``learn`` (``learn: {target: ...}``).
    target: str = "label"
    #: The Python type a target must have (``None`` accepts any JSON value).
    target_type: type | None = str
    #: True if the expert builds on other experts' opinions (``needs:`` in the experts file):
    #: each input is then a dict of its field and those opinions, keyed as the file maps them.
    takes_opinions: bool = False
    #: The input keys such an expert requires (checked against ``needs:`` when the server starts).
    opinion_inputs: tuple[str, ...] = ()
    #: What the experts file says it needs, ``{expert: input key}`` (set by ``build_expert``).
    needs: Mapping[str, str] = MappingProxyType({})

    def __init__(self, name: str | None = None, *, field: str | None = None,
                 version: str | None = None, description: str | None = None,
                 **options: Any) -> None:
        """Keep the identity; unknown options are an error (typos show early)."""
        if options:
            raise TypeError(
                f"{type(self).__name__} got unknown options: {', '.join(sorted(options))}")
        self.name = name or type(self).__name__.lower()
        if field is not None:
            self.field = field
        if version is not None:
            self.version = str(version)
        if description is not None:
            self.description = description

    def load(self) -> None:
        """Load the model (called once, before the server takes calls)."""

    def predict(self, inputs: Sequence[Any]) -> list[dict]:
        """Return one opinion (a JSON-able dict) per input, in order."""
        raise NotImplementedError

    def metrics(self) -> dict:
        """Held-out metrics of the model, as saved beside it (empty if none)."""
        return {}

    def learn(self, inputs: Sequence[Any], targets: Sequence[Any]) -> None:
        """Learn from examples, in order (only for experts with ``learns = True``).

        Called from one thread at a time; it may run while ``predict`` runs in
        another thread, so an expert guards its model itself.
        """
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def state(self) -> dict:
        """What the expert has learned so far; at least ``{"updates": <examples applied>}``."""
        return {}

    def checkpoint(self) -> bytes:
        """The learned model as bytes, for ``restore`` after a restart."""
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def restore(self, data: bytes) -> None:
        """Replace the model with one saved by ``checkpoint``."""
        raise NotImplementedError(f"{type(self).__name__} does not learn")

    def describe(self) -> dict:
        """What ``experts()`` reports about this expert."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "field": self.field,
            "reads": "field" if self.field is not None else "document",
            "metrics": self.metrics(),
            "opinion_schema": self.opinion_schema,
            "learns": self.learns,
            **({"target": self.target, "learning": self.state()} if self.learns else {}),
        }


def whole_document(function: Callable) -> Callable:
    """Mark a plain-function expert as reading the whole document: ``f(doc: dict) -> dict``.

    The function gets the JSON document as a stdin/stdout script would (a
    shallow copy: it may add keys without changing what the caller gets back).
    """
    function.reads = "document"
    return function


class FunctionExpert(Expert):
    """Wraps a plain function ``f(value) -> dict`` (or ``f(values) -> list``).

    With ``batched=True`` the function receives the whole batch. A function
    may declare the JSON Schema of its opinion as an ``opinion_schema``
    attribute (optional); one marked with ``@whole_document`` receives the
    whole document instead of one field.
    """

    def __init__(self, function: Callable, name: str | None = None, *,
                 batched: bool = False, **options: Any) -> None:
        """Take the description from the function's docstring by default."""
        doc = inspect.getdoc(function) or ""
        options.setdefault("description", doc.splitlines()[0] if doc else "")
        options.setdefault("version", getattr(function, "version", "0"))
        if getattr(function, "reads", None) == "document" and "field" not in options:
            self.field = None
            self.input_type = dict
        super().__init__(name or function.__name__, **options)
        self.function = function
        self.opinion_schema = getattr(function, "opinion_schema", None)
        self.batched = batched

    def predict(self, inputs: Sequence[Any]) -> list[dict]:
        """Call the function per input, or once for the batch."""
        if self.batched:
            return list(self.function(list(inputs)))
        return [self.function(value) for value in inputs]


def read_metrics(model_dir: str | Path) -> dict:
    """Read ``metrics.json`` saved beside a model, or ``{}``."""
    path = Path(model_dir) / "metrics.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())
