"""expertd: serve Python ML experts to pipelines, scripts and web apps over ZeroRPC.

The public API, from the package itself::

    from expertd import Expert, ExpertsClient

    class Shouting(Expert):              # an expert: load once, predict batches
        def predict(self, texts):
            return [{"text": t.upper()} for t in texts]

    with ExpertsClient() as experts:     # a client of a running server
        experts.sentiment({"text": "I love it"})

Each name is imported when first used (PEP 562), so ``import expertd`` (which
every pipe stage does, as the parent of ``expertd.clients.pipe``) loads
nothing: no zerorpc, no gevent, no TensorFlow.
"""

from __future__ import annotations

import os as _os

# In a checkout, the parts sit beside this folder (rpc_server/, experts/, clients/), mapped
# into expertd by setuptools' package-dir when a wheel is built. The development install
# (`make`: an editable install in compat mode, the checkout on sys.path) finds them here,
# at the cost of two stat calls: setuptools' own editable finder costs every Python start
# in the venv about 13 ms (it imports pathlib, re and urllib), a third of a pipe stage.
_CHECKOUT = _os.path.dirname(__path__[0])
if not _os.path.isdir(_os.path.join(__path__[0], "rpc_server")) and \
        _os.path.isfile(_os.path.join(_CHECKOUT, "rpc_server", "__init__.py")):
    __path__.append(_CHECKOUT)

#: Public name -> the module that defines it.
_EXPORTS = {
    "Expert": "expertd.experts.base",
    "FunctionExpert": "expertd.experts.base",
    "ExpertError": "expertd.experts.base",
    "whole_document": "expertd.experts.base",
    "KerasExpert": "expertd.experts.keras_expert",
    "compiled": "expertd.experts.keras_expert",
    "ExpertsClient": "expertd.clients.client",
    "ServerTimeout": "expertd.clients.client",
    "ServerLost": "expertd.clients.client",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    """Import a public name on first use (and keep it)."""
    if name == "__version__":
        from importlib.metadata import version

        value = version("expertd")
    elif name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'expertd' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy public ones included."""
    return sorted({*globals(), *__all__})
