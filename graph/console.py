"""Console plumbing shared by the `sleuth` commands (graph/cli.py and training/cli.py).

Results go to stdout (`out`, or one JSON document with `print_json`); progress and messages
go to stderr (`err`); a user's mistake ends the command with one red line (`fail`).

Errors are turned into that line in one place, `ErrorsAsLines`, the group class of the
`sleuth` app: the project's `ToolError`, `ValueError` (pydantic's `ValidationError` named by
the flag it came from), `OSError` and `ImportError` raised by any command print one escaped
line and exit 1; a command needs no try/except of its own. `SLEUTH_TRACEBACK=1` lets them
through with their traceback instead. Messages written for both audiences name the flag and
the Python argument as `(--flag X / arg=X)`; the command line shows the flag only. Path
options are checked as they are parsed (`folder`, `writable_folder`, `writable_file`; `--kb`
with `knowledge_base`, which lets a LanceDB URI through), so a command stops before it loads
a model or does any work.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tools.paths import is_uri

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get whole tables
_PYTHON_HALF = re.compile(r"\((--[^()/]*?) / [^()]*\)")  # "(--kb DIR / kb=DIR)" -> "(--kb DIR)"


RoleModel = Annotated[str | None, typer.Option(
    help="Model spec for this role (default: --model).", show_default=False)]


def role_models(planner: str | None, searcher: str | None, selector: str | None,
                writer: str | None) -> dict[str, str]:
    """`--model-ROLE` options as `ResearchConfig.models` (the roles given)."""
    named = {"planner": planner, "searcher": searcher, "selector": selector, "writer": writer}
    return {role: spec for role, spec in named.items() if spec}


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr, as one escaped line, and exit with status `code`."""
    line = _PYTHON_HALF.sub(r"(\1)", " ".join(str(message).split()))
    err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    """Write `obj` to stdout as one JSON document."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# --------------------------------------------------------------------------- errors


def _options(command: Any) -> set[str]:
    """Every option name of a command (of all its subcommands, for a group)."""
    if hasattr(command, "commands"):
        return {o for sub in command.commands.values() for o in _options(sub)}
    return {o for p in getattr(command, "params", []) for o in getattr(p, "opts", [])}


def _validation_line(e: Any, options: set[str] | frozenset[str]) -> str:
    """`--max-rounds: input should be greater than or equal to 1, not 0` (one per error)."""
    parts = []
    for problem in e.errors():
        loc = [str(x) for x in problem.get("loc", ())]
        flag = "--" + loc[0].replace("_", "-") if loc else ""
        name = flag if flag in options else ".".join(loc) or e.title
        msg = problem["msg"][:1].lower() + problem["msg"][1:]
        value = problem.get("input")
        got = f", not {value!r}" if isinstance(value, str | int | float | bool | None) else ""
        parts.append(f"{name}: {msg}{got}")
    return "; ".join(parts)


def error_line(e: BaseException, options: set[str] | frozenset[str] = frozenset()) -> str:
    """What the command line says about an error (before `fail` escapes it)."""
    from pydantic import ValidationError

    from tools.errors import ToolError

    if isinstance(e, ToolError):
        return e.message
    if isinstance(e, ValidationError):
        return _validation_line(e, options)
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        return f"{e.filename}: {e.strerror}"  # not "[Errno 20] Not a directory: 'x'"
    return str(e) or type(e).__name__


class ErrorsAsLines(TyperGroup):
    """The `sleuth` group: a known error from any subcommand ends it with one line, exit 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the subcommand; `fail` with one line on ToolError, ValueError, OSError, ImportError."""
        from tools.errors import ToolError

        try:
            return super().invoke(ctx)
        except (ToolError, ValueError, OSError, ImportError) as e:
            if os.environ.get("SLEUTH_TRACEBACK"):
                raise
            name = ctx.invoked_subcommand
            fail(error_line(e, _options(self.get_command(ctx, name) if name else None)))


# --------------------------------------------------------------------------- path options


def _flag(param: typer.CallbackParam) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def _writable_dir(path: Path, flag: str, start: Path | None = None) -> None:
    """Fail unless the nearest existing folder at or above `start` (default `path`) can be
    written in: `path` is what the message names."""
    here = (start or path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        fail(f"{flag} {path}: {here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot write in {here}")


def folder(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A folder option (`--kb`): a path naming a file ends the command at once."""
    if value is not None and value.is_file():
        fail(f"{_flag(param)} {value} is a file: give a folder")
    return value


def writable_folder(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A folder option the command writes into (made if absent): it must be able to."""
    if value is not None:
        folder(param, value)
        _writable_dir(value, _flag(param))
    return value


def knowledge_base(param: typer.CallbackParam, value: str | None) -> Path | str | None:
    """A `--kb` option: a LanceDB URI (`s3://`, `gs://`, `az://`, `db://`, `file://`) passes as
    it is; anything else is a local folder, checked as `folder` checks it."""
    if value is None or is_uri(value):
        return value
    return folder(param, Path(value))


def writable_knowledge_base(param: typer.CallbackParam, value: str | None) -> Path | str | None:
    """A `--kb` option the command writes into: a LanceDB URI as it is, else `writable_folder`."""
    if value is None or is_uri(value):
        return value
    return writable_folder(param, Path(value))


def writable_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A file option the command writes at the end (`eval --out`): checked before the work."""
    if value is not None:
        if value.is_dir():
            fail(f"{_flag(param)} {value} is a folder: give a file name")
        if value.exists() and not os.access(value, os.W_OK):
            fail(f"{_flag(param)} {value}: cannot write it")
        _writable_dir(value, _flag(param), start=value.parent)
    return value


__all__ = ["ErrorsAsLines", "RoleModel", "err", "error_line", "fail", "folder", "knowledge_base", "out",
           "print_json", "role_models", "writable_file", "writable_folder", "writable_knowledge_base"]
