"""Prompt files: Jinja2 templates with four blocks rendered into chat messages.

A prompt file (`agents/prompts/<role>.jinja`, or any path) defines the blocks `system`,
worked examples `example_user_1`, `example_assistant_1`, `example_user_2`, ... (135M-parameter
models follow a tag format only when shown one), and `user`; an optional `stop` block lists
the strings that end a reply, one per line (else the role's own). Rendering is strict: a missing
variable raises. Everything before `user` does not depend on the task, so its KV cache is
computed once and shared by every call of the role: examples cost prefill only once.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agents.parsing import tag_pattern

PROMPTS = Path(__file__).parent / "prompts"
BLOCKS = ("system", "example_user_1", "example_assistant_1", "user")


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


def _defuse(m: re.Match[str]) -> str:
    return "[" + m.group(0)[1:-1] + "]"


def neutralize(text: str) -> str:
    """Defuse action tags inside retrieved text: documents are data, never agent actions.

    Every match of `agents.parsing.tag_pattern()` (the pattern the parsers find tags with) has
    its angle brackets turned into square ones, so no parser finds a tag in the result.
    """
    return tag_pattern().sub(_defuse, text)


def _block(template: jinja2.Template, name: str, context: dict[str, Any]) -> str:
    return "".join(template.blocks[name](template.new_context(context))).strip()


def declared_stops(template: jinja2.Template) -> list[str] | None:
    """The stop strings a prompt file declares in an optional `stop` block (one per line)."""
    if "stop" not in template.blocks:
        return None
    return [line.strip() for line in _block(template, "stop", {}).splitlines() if line.strip()]


def brief(passage: Any, words: int = 60) -> dict[str, str]:
    """A passage as prompt data: its title and first words, action tags defused."""
    text = " ".join(passage.text.split()[:words])
    return {"title": neutralize(passage.title), "text": neutralize(text)}


def render_messages(template: jinja2.Template, *, examples: bool = True,
                    **context: Any) -> list[BaseMessage]:
    """Render system, the worked examples (user, assistant pairs; left out with
    `examples=False`, for a policy trained on the formats) and the user message."""
    messages: list[BaseMessage] = [SystemMessage(_block(template, "system", context))]
    n = 1
    while examples and f"example_user_{n}" in template.blocks:
        messages.append(HumanMessage(_block(template, f"example_user_{n}", context)))
        messages.append(AIMessage(_block(template, f"example_assistant_{n}", context)))
        n += 1
    messages.append(HumanMessage(_block(template, "user", context)))
    return messages
