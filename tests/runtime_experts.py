"""A test expert for ``rpc_server.runtime``: it answers with the GIL switch interval it ran under."""

from __future__ import annotations

import sys

from expertd.experts.base import Expert


class SwitchInterval(Expert):
    """Opinion ``{"switch_ms": ...}``: the interpreter's GIL switch interval during ``predict``."""

    version = "1"

    def predict(self, inputs):
        """The same interval for every input of the model call."""
        switch_ms = round(sys.getswitchinterval() * 1000, 3)
        return [{"switch_ms": switch_ms} for _ in inputs]
