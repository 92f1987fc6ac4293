"""Console plumbing shared by the `sleuth` commands (graph/cli.py and training/cli.py).

Results go to stdout (`out`, or one JSON document with `print_json`); progress and messages
go to stderr (`err`); a user's mistake ends the command with one red line (`fail`).
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get whole tables


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and end the command with exit status `code`."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Write `obj` to stdout as one JSON document."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


__all__ = ["err", "fail", "out", "print_json"]
