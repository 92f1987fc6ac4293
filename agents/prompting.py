"""Prompt files: Jinja2 templates with four blocks rendered into chat messages.

A prompt file (`agents/prompts/<role>.jinja`, or any path) defines the blocks `system`,
`example_user`, `example_assistant` (one worked example: 135M-parameter models follow a
tag format only when shown one) and `user`. Rendering is strict: a missing variable raises.
The first three blocks do not depend on the task, so their KV cache is shared by every call.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

PROMPTS = Path(__file__).parent / "prompts"
BLOCKS = ("system", "example_user", "example_assistant", "user")
_TAG = re.compile(r"</?\s*(answer|search|subquestions|done|information)\s*/?>", re.I)


@functools.cache
def _env(folder: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, autoescape=False)


def load_template(prompt: str | Path) -> jinja2.Template:
    """A prompt by role name (`planner`) or by path to a .jinja file with the four blocks."""
    path = Path(prompt) if str(prompt).endswith(".jinja") else PROMPTS / f"{prompt}.jinja"
    if not path.exists():
        raise FileNotFoundError(f"no prompt file {path}")
    template = _env(str(path.parent.resolve())).get_template(path.name)
    missing = [b for b in BLOCKS if b not in template.blocks]
    if missing:
        raise ValueError(f"prompt {path} lacks the blocks {missing} (needs {list(BLOCKS)})")
    return template


def neutralize(text: str) -> str:
    """Defuse action tags inside retrieved text: documents are data, never agent actions."""
    return _TAG.sub(lambda m: m.group(0).replace("<", "[").replace(">", "]"), text)


def render_messages(template: jinja2.Template, **context: Any) -> list[BaseMessage]:
    """Render the four blocks into system, example (user, assistant) and user messages."""
    parts = {}
    for name in BLOCKS:
        parts[name] = "".join(template.blocks[name](template.new_context(context))).strip()
    return [SystemMessage(parts["system"]), HumanMessage(parts["example_user"]),
            AIMessage(parts["example_assistant"]), HumanMessage(parts["user"])]
