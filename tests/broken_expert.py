"""An expert whose model cannot load (like a corrupt model file): for reload and start tests.

The experts file check cannot see this (the import and the options are fine);
only loading fails, in the worker.
"""

from __future__ import annotations

from expertd.experts.base import Expert


class UnloadableExpert(Expert):
    """``load()`` raises, as a model with a truncated weights file would."""

    def load(self) -> None:
        """Fail the way a broken model file does."""
        raise OSError("model file is truncated (test expert)")

    def predict(self, inputs):
        """Never reached."""
        raise AssertionError("not loaded")
