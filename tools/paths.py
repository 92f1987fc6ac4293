"""Where sleuth keeps its caches: one folder, `$SLEUTH_HOME` (default ~/.cache/sleuth).

Converted models, knowledge-base caches and demo data live below it. Kept in `tools` (the
lowest layer, no heavy imports) so that every layer can find it.
"""

from __future__ import annotations

import os
from pathlib import Path


def sleuth_home() -> Path:
    """The cache folder: `SLEUTH_HOME`, or ~/.cache/sleuth."""
    return Path(os.environ.get("SLEUTH_HOME") or Path.home() / ".cache" / "sleuth")


__all__ = ["sleuth_home"]
