"""Lenient parsers from model text to typed results; they never raise.

Only model completions are parsed. Retrieved text is never passed here, so a page that
contains `<answer>` cannot become an agent action.
"""

from __future__ import annotations

import re

from agents.schemas import Draft, Plan, SearchAction, Verdict

_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+?)\s*$", re.M)
_CITE = re.compile(r"\[(\d+)\]")


def tag(text: str, name: str) -> tuple[str | None, bool]:
    """Content of `<name>...</name>` and whether it was closed (an unclosed tag runs to the end)."""
    m = re.search(rf"<\s*{name}\s*>(.*?)<\s*/\s*{name}\s*>", text, re.S | re.I)
    if m:
        return m.group(1).strip(), True
    m = re.search(rf"<\s*{name}\s*>(.*)", text, re.S | re.I)
    return (m.group(1).strip(), False) if m else (None, False)


def parse_plan(text: str, max_items: int = 3) -> Plan:
    """`<subquestions>` numbered list `</subquestions>`, or `<done>`."""
    if re.search(r"<\s*done\s*/?\s*>", text, re.I):
        return Plan(done=True, ok=True)
    block, closed = tag(text, "subquestions")
    items = [i.strip() for i in _ITEM.findall(block if block is not None else text) if i.strip()]
    items = list(dict.fromkeys(items))[:max_items]
    return Plan(sub_questions=items, ok=bool(items) and closed)


def parse_search(text: str) -> SearchAction:
    """`<search>query</search>`."""
    query, closed = tag(text, "search")
    query = " ".join(query.split()) if query else None
    return SearchAction(query=query or None, ok=bool(query) and closed)


def parse_verdict(text: str) -> Verdict:
    """A reply starting with yes or no."""
    m = re.match(r"\W*(yes|no)\b", text.strip(), re.I)
    return Verdict(relevant=bool(m) and m.group(1).lower() == "yes", ok=bool(m))


def parse_draft(text: str) -> Draft:
    """`<answer>short</answer>` then a report citing `[n]`."""
    answer, closed = tag(text, "answer")
    if answer is not None and closed:
        report = re.sub(r"<\s*answer\s*>.*?<\s*/\s*answer\s*>", "", text, flags=re.S | re.I).strip()
        ok = bool(answer)
    else:  # no usable tag: the first line stands in for the answer
        first = text.strip().splitlines()[0] if text.strip() else ""
        answer = re.sub(r"</?\s*answer\s*>", "", first, flags=re.I).strip()
        report, ok = text.strip(), False
    cited = list(dict.fromkeys(int(n) for n in _CITE.findall(report)))
    return Draft(answer=answer, report=report, cited=cited, ok=ok)
