"""Lenient parsers from model text to typed results; they never raise, in linear time.

Only model completions are parsed. Retrieved text is never passed here, and before it enters a
prompt `agents.prompting.neutralize` defuses every action tag in it, so a page that contains
`<answer>` cannot become an agent action even when a small model echoes it.

What an action tag looks like is defined once, by `tag_pattern`: the parsers find tags only
through it and the neutraliser rewrites every match of it, so the two cannot drift apart. A tag
is `<`, optional `/`, a name from `ACTION_TAGS` (any case), optional `/`, `>`, with any
whitespace between the parts: `<answer>`, `< / Answer >`, `<done / >`. Attributes are not part
of the grammar (`<answer x="1">` is no tag).

Every parser reads at most `MAX_REPLY_CHARS` characters (a reply is a few hundred tokens), scans
them once (no regular expression that backtracks over an unclosed tag), and replaces lone
surrogates with U+FFFD, so what it returns can be stored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from agents.schemas import Draft, Plan, SearchAction, SectionDraft, Verdict
from tools.text import clean_text

# `information` is no action of ours, but it is the retrieved-text block of the Search-R1 format
# that some policies are trained on: it is defused in documents all the same.
ACTION_TAGS = ("answer", "search", "subquestions", "done", "information")
MAX_REPLY_CHARS = 64_000

_ITEM = re.compile(r"(?:\d++[.)]|[-*•])\s+(.+)")
_CITE = re.compile(r"\[(\d{1,9})\]")  # longer numbers are no citation (and int() would refuse them)
_VERDICT = re.compile(r"\W*+(yes|no)\b", re.I)


@functools.cache
def tag_pattern(*names: str) -> re.Pattern[str]:
    """The one definition of an action tag: a compiled pattern matching any form of these tags
    (all of `ACTION_TAGS` when none are named), with groups `close`, `name` and `empty`."""
    names = names or ACTION_TAGS
    unknown = sorted(set(names) - set(ACTION_TAGS))
    if unknown:  # a tag the neutraliser would not know of could be injected through documents
        raise ValueError(f"{unknown} are not in ACTION_TAGS {ACTION_TAGS}")
    alternatives = "|".join(re.escape(n) for n in names)
    # possessive whitespace runs: a failed match never rescans, so a search is linear
    return re.compile(rf"<\s*+(?P<close>/\s*+)?(?P<name>{alternatives})\s*+(?P<empty>/\s*+)?>", re.I)


def _kind(m: re.Match[str]) -> str:
    """`open` (`<name>`), `close` (`</name>`) or `empty` (`<name/>`)."""
    return "close" if m.group("close") else "empty" if m.group("empty") else "open"


def find_tag(text: str, name: str, kinds: Iterable[str] = ("open",), pos: int = 0
             ) -> re.Match[str] | None:
    """The first `name` tag of one of these kinds at or after `pos` (one scan from `pos`)."""
    wanted = set(kinds)
    return next((m for m in tag_pattern(name).finditer(text, pos) if _kind(m) in wanted), None)


def _reply(text: str) -> str:
    """What a parser reads: the first `MAX_REPLY_CHARS` characters, storable."""
    return clean_text(text[:MAX_REPLY_CHARS])


def tag(text: str, name: str) -> tuple[str | None, bool]:
    """Content of `<name>...</name>` and whether it was closed (an unclosed tag runs to the end)."""
    return _tag(_reply(text), name)


def _tag(text: str, name: str) -> tuple[str | None, bool]:
    opening = find_tag(text, name)
    if opening is None:
        return None, False
    closing = find_tag(text, name, ("close",), opening.end())
    if closing is None:
        return text[opening.end():].strip(), False
    return text[opening.end():closing.start()].strip(), True


def _items(text: str) -> list[str]:
    """The items of numbered (`1.`, `2)`) or bulleted (`-`, `*`, `•`) lines."""
    items = []
    for line in text.split("\n"):
        m = _ITEM.match(line.strip())
        if m and m.group(1).strip():
            items.append(m.group(1).strip())
    return items


def parse_plan(text: str, max_items: int = 3) -> Plan:
    """`<subquestions>` numbered list `</subquestions>`, or `<done>`."""
    text = _reply(text)
    done = find_tag(text, "done", ("open", "empty"))
    listed = find_tag(text, "subquestions")
    if done and (listed is None or done.start() < listed.start()):  # the first decision counts
        return Plan(done=True, ok=True)
    block, closed = _tag(text, "subquestions")
    items = list(dict.fromkeys(_items(block if block is not None else text)))[:max_items]
    return Plan(sub_questions=items, ok=bool(items) and closed)


def parse_search(text: str) -> SearchAction:
    """`<search>query</search>`."""
    query, closed = tag(text, "search")
    query = " ".join(query.split()) if query else None
    return SearchAction(query=query or None, ok=bool(query) and closed)


def parse_verdict(text: str) -> Verdict:
    """A reply starting with yes or no."""
    m = _VERDICT.match(_reply(text).strip())
    return Verdict(relevant=bool(m) and m.group(1).lower() == "yes", ok=bool(m))


def _without_answers(text: str) -> str:
    """The text with every closed `<answer>...</answer>` span removed."""
    parts, pos = [], 0
    while (opening := find_tag(text, "answer", pos=pos)) is not None:
        closing = find_tag(text, "answer", ("close",), opening.end())
        if closing is None:
            break
        parts.append(text[pos:opening.start()])
        pos = closing.end()
    return "".join(parts) + text[pos:]


def parse_draft(text: str) -> Draft:
    """`<answer>short</answer>` then a report citing `[n]`."""
    text = _reply(text)
    answer, closed = _tag(text, "answer")
    if answer is not None and closed:
        report = _without_answers(text).strip()
        ok = bool(answer)
    else:  # no usable tag: the first line stands in for the answer
        first = next(iter(text.strip().splitlines()), "")
        answer = tag_pattern("answer").sub("", first).strip()
        report, ok = text.strip(), False
    cited = list(dict.fromkeys(int(n) for n in _CITE.findall(report)))
    return Draft(answer=answer, report=report, cited=cited, ok=ok)


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?:\s*\[\d{1,9}\])*(?=\s|$)")


def parse_section(text: str, cut: bool = False) -> SectionDraft:
    """A report section: the reply's text (action tags and heading marks removed) citing `[n]`;
    a reply `cut` off by the token budget ends at its last whole sentence (if it has one)."""
    text = tag_pattern().sub("", _reply(text))
    lines = [line.strip().lstrip("#").strip() for line in text.strip().splitlines()]
    body = "\n".join(line for line in lines if line).strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(body)] if cut else []
    if ends and ends[-1] < len(body):
        body = body[:ends[-1]]
    cited = list(dict.fromkeys(int(n) for n in _CITE.findall(body)))
    return SectionDraft(text=body, cited=cited, ok=bool(body))


def replace_citations(text: str, new: Callable[[int], str]) -> str:
    """The text with every citation `[n]` replaced by `new(n)` (an empty string drops it).

    >>> replace_citations("Lenn [1] was born in Varo [7].", lambda n: "[2]" if n == 1 else "")
    'Lenn [2] was born in Varo .'
    """
    return _CITE.sub(lambda m: new(int(m.group(1))), text)
