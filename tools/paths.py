"""Where sleuth keeps its caches: one folder, `$SLEUTH_HOME` (default ~/.cache/sleuth).

Converted models, knowledge-base caches and demo data live below it. Kept in `tools` (the
lowest layer, no heavy imports) so that every layer can find it; so is `is_uri`, which tells
a storage URI (a remote LanceDB) from a local folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def sleuth_home() -> Path:
    """The cache folder: `SLEUTH_HOME`, or ~/.cache/sleuth."""
    return Path(os.environ.get("SLEUTH_HOME") or Path.home() / ".cache" / "sleuth")


def is_uri(location: str | Path) -> bool:
    """Whether a location is a URI (`s3://`, `gs://`, `az://`, `db://`, `file://`, ...) that
    goes to its library as it is, rather than a local path (`Path` would fold its `//`).

    >>> is_uri("s3://bucket/kb"), is_uri("kb/"), is_uri(Path("s3://bucket/kb"))
    (True, False, False)
    """
    return isinstance(location, str) and bool(_URI.match(location))


__all__ = ["is_uri", "sleuth_home"]
