"""Where expertd keeps what a user makes once and reuses: the default experts' models and data.

``models_dir()``: ``$EXPERTD_MODELS``; else, in a checkout of the repository, its
``models/``; else ``$XDG_DATA_HOME/expertd/models`` (``~/.local/share/expertd/models``).
``data_dir()`` the same with ``$EXPERTD_DATA`` and ``data/``. The packaged default
experts file (``expertd/defaults/experts.yaml``) reads its models from ``models_dir()``
(``$EXPERTD_MODELS`` in its path options); ``expertd models train`` writes there.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository's root when running from a checkout (``expertd/`` is one of its folders).
_CHECKOUT = Path(__file__).resolve().parent.parent
#: The default experts file shipped inside the package (``include: [default]``).
PACKAGED_DEFAULTS = Path(__file__).resolve().parent / "defaults" / "experts.yaml"


def _user_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser() / "expertd"


def _in_checkout(folder: str) -> Path | None:
    candidate = _CHECKOUT / folder
    if (_CHECKOUT / "pyproject.toml").exists() and (_CHECKOUT / "config" / "experts.yaml").exists() \
            and candidate.is_dir():
        return candidate
    return None


def models_dir() -> Path:
    """Where the default experts' models are read from and ``expertd models train`` writes them."""
    if os.environ.get("EXPERTD_MODELS"):
        return Path(os.environ["EXPERTD_MODELS"]).expanduser()
    return _in_checkout("models") or _user_data_home() / "models"


def data_dir() -> Path:
    """Where the training data (VADER's ground truth) is cached."""
    if os.environ.get("EXPERTD_DATA"):
        return Path(os.environ["EXPERTD_DATA"]).expanduser()
    return _in_checkout("data") or _user_data_home() / "data"
