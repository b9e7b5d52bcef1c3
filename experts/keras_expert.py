"""A Keras model as an expert, the fast way by default.

``compiled(model)`` wraps a Keras model in one ``tf.function`` that calls
``model(x, training=False)``: one graph call per batch, from any thread, about
0.3 ms for one short text where ``model.predict`` takes about 43 ms (Keras'
``predict`` is made for large arrays: it builds a dataset and a loop per call).

``KerasExpert`` is an ``Expert`` whose ``load`` makes (or reads) the model once
and compiles it; a subclass says how to make the model and how to turn the
model's outputs into opinions::

    class Topic(KerasExpert):
        def build_model(self):            # or pass options: {model_path: model.keras}
            return keras.saving.load_model("model.keras")

        def opinions(self, outputs, inputs):
            return [{"score": round(float(row[0]), 4)} for row in outputs]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from expertd.experts.base import Expert, quiet_tensorflow


def compiled(model: Any) -> Callable[[Sequence[Any]], Any]:
    """``model`` as a function batch -> outputs (numpy arrays, or a dict of them).

    One ``tf.function`` with ``training=False`` and, for a single-input model,
    a fixed input signature (any batch size, no retracing). A batch is a list
    of inputs (e.g. strings) or an array.
    """
    quiet_tensorflow()
    import tensorflow as tf

    inputs = getattr(model, "inputs", None) or []
    if len(inputs) == 1:
        shape, dtype = tuple(inputs[0].shape), tf.as_dtype(inputs[0].dtype)
        signature = [tf.TensorSpec([None, *shape[1:]], dtype)]
    else:
        shape, dtype, signature = None, None, None

    @tf.function(input_signature=signature, reduce_retracing=True)
    def run(batch):
        return model(batch, training=False)

    def call(batch: Sequence[Any]) -> Any:
        out = run(tf.convert_to_tensor(batch, dtype=dtype) if dtype is not None else batch)
        if isinstance(out, dict):
            return {key: value.numpy() for key, value in out.items()}
        if isinstance(out, (list, tuple)):
            return [value.numpy() for value in out]
        return out.numpy()

    call.model = model
    return call


class KerasExpert(Expert):
    """An expert backed by a Keras model, made once in ``load`` and called compiled.

    Options: ``model_path`` (a ``.keras`` file, relative to the experts file)
    unless the subclass overrides ``build_model``. Subclasses implement
    ``opinions(outputs, inputs)``; ``prepare(inputs)`` turns a batch of inputs
    into what the model takes (default: the list itself, e.g. strings).
    """

    #: An input used to warm the compiled model up in ``load`` (and by ``expertd check --load``).
    sample_input: Any = "warm up"

    def __init__(self, name: str | None = None, *, model_path: str | None = None, **options) -> None:
        """Remember where the model lives; nothing is read until ``load``."""
        super().__init__(name, **options)
        self.model_path = Path(model_path) if model_path else None
        self.model = None
        self.run: Callable | None = None

    def build_model(self) -> Any:
        """Make the Keras model (default: read ``model_path``)."""
        if self.model_path is None:
            raise ValueError(f"{type(self).__name__}: pass options: {{model_path: FILE.keras}} "
                             f"or override build_model()")
        quiet_tensorflow()
        import keras

        return keras.saving.load_model(self.model_path, compile=False)

    def load(self) -> None:
        """Make the model once, compile it into one graph and warm it up."""
        if self.run is not None:
            return
        self.model = self.build_model()
        self.run = compiled(self.model)
        self.run(self.prepare([self.sample_input]))

    def prepare(self, inputs: Sequence[Any]) -> Any:
        """What the model takes for a batch of inputs (default: the list of inputs)."""
        return list(inputs)

    def opinions(self, outputs: Any, inputs: Sequence[Any]) -> list[dict]:
        """One opinion per input from the model's outputs for the batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement opinions(outputs, inputs)")

    def predict(self, inputs: Sequence[Any]) -> list[dict]:
        """One compiled model call for the whole batch."""
        if not inputs:
            return []
        if self.run is None:
            raise RuntimeError(f"expert {self.name!r}: predict() called before load()")
        return self.opinions(self.run(self.prepare(inputs)), inputs)
