"""Rationale chains as demonstrations: the gold reasoning of generated tasks, played through
the agents' own prompts, for a supervised warm start before RL.

A generated world knows each task's chain (`meta.rationale`: per hop the sub-question, a
query that finds the hop's page, the intermediate answer and that page). `ChainTeacher` is
a scripted chat model that plays it: run through the real research graph, the planner,
searcher and writer send it their real prompts (with the passages really retrieved), and it
answers as a policy that knows the chain would — ask the next hop whose page is not in the
evidence yet, search that hop's query (another wording after a miss), stop when every hop's
page is in hand, answer with the gold answer and cite the pages it read, each hop's fact
with its page number (with the reasoned writer prompt, `agents.writer.REASONED`, the facts
come first and the answer last; with the reasoned planner prompt, `agents.planner.REASONED`,
the planner first states the facts of the hops already in the evidence, so the next
sub-question names the entity they revealed). So demonstrations
carry the prompts the policy will see, and a miss in retrieval becomes a demonstrated retry.
Runs whose answer is not exactly right (a hop's page never surfaced) are dropped.

Real questions can carry chains too: `from_decomposition` turns a task with a MuSiQue-style
`meta.question_decomposition` (per hop a sub-question that may name an earlier hop's answer
as `#k`, the hop's answer, the index of its supporting paragraph) into one with a rationale,
and `from_evidences` one with 2WikiMultihopQA's (subject, relation, object) triples; each
hop's fact is the supporting paragraph's sentence that holds the hop's answer. So the teacher
also demonstrates on real pages (Wikipedia paragraphs), not only on generated ones.

The teacher reads the prompt formats of `agents/prompts/` (the `Question:` and
`Sub-question:` lines, `[n] Title: text` evidence lines): a custom prompt file with other
fields needs its own teacher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from agents.planner import planner_reply
from agents.writer import writer_reply
from graph.config import ResearchConfig
from graph.run import research_many
from graph.trajectory import Trajectory
from tools.text import normalize_answer
from training import rewards

_EVIDENCE = re.compile(r"^\[(\d+)\] (.+?): (.*)$", re.M)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_EARLIER = re.compile(r"#(\d+)")
# a longer supporting sentence is cut to this many words, up to just past its answer: the
# reasoned planner restates the facts found before its next sub-question, in 96 new tokens
FACT_WORDS = 16
Hop = Mapping[str, str]


def _field(text: str, name: str) -> str:
    m = re.search(rf"^{name}: (.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def _key(question: str) -> str:
    return " ".join(question.split()).lower()


def chains_of(task: Mapping[str, Any]) -> list[list[Hop]]:
    """A task's rationale: one list of hops per chain (two for a comparison); [] if none."""
    return list((task.get("meta") or {}).get("rationale") or [])


def from_decomposition(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task with a rationale built from its `meta.question_decomposition` (MuSiQue's
    format), or None when the decomposition cannot be played: a hop without an answer or a
    supporting paragraph, an answer its paragraph does not contain, a `#k` naming no earlier
    hop, or a page the evidence format cannot name unambiguously (its title holds ": " or
    is shared with another paragraph of the task)."""
    meta = task.get("meta") or {}
    steps, docs = meta.get("question_decomposition"), task.get("docs") or []
    if not steps or not isinstance(steps, list):
        return None
    titles = [str(d.get("title", "")) for d in docs]
    hops: list[dict[str, str]] = []
    for step in steps:
        idx, answer = step.get("paragraph_support_idx"), str(step.get("answer") or "").strip()
        if not isinstance(idx, int) or not 0 <= idx < len(docs) or not answer:
            return None
        doc, title = docs[idx], titles[idx]
        fact = _fact(str(doc.get("text", "")), answer)
        if fact is None or ": " in title or titles.count(title) > 1:
            return None
        refs = [int(k) for k in _EARLIER.findall(str(step.get("question", "")))]
        if any(not 1 <= k <= len(hops) for k in refs):
            return None
        sub = _question(_EARLIER.sub(lambda m: hops[int(m.group(1)) - 1]["answer"],
                                     str(step["question"])))
        hops.append(_hop(sub, sub.rstrip("?"), answer, fact, doc))
    if normalize_answer(hops[-1]["answer"]) != normalize_answer(str(task.get("answer", ""))):
        return None
    return {**task, "meta": {**meta, "rationale": [hops]}}


def from_evidences(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task with a rationale built from its `meta.evidences` (2WikiMultihopQA's
    (subject, relation, object) triples), or None when they cannot be played. Triples link
    into chains (a triple's subject is the previous one's object); one chain must end at
    the answer, two or more make a comparison (the answer is then not a hop's). Each hop
    reads the subject's own paragraph (by title), its fact the sentence holding the object."""
    meta = task.get("meta") or {}
    triples = meta.get("evidences")
    if not triples or not all(isinstance(t, list | tuple) and len(t) == 3 for t in triples):
        return None
    triples = [tuple(str(x).strip() for x in t) for t in triples]
    docs = task.get("docs") or []
    by_title: dict[str, list[Mapping[str, Any]]] = {}
    for d in docs:
        by_title.setdefault(_key(str(d.get("title", ""))), []).append(d)
    objects = {_key(o) for _, _, o in triples}
    chains: list[list[dict[str, str]]] = []
    used = 0
    for start in (t for t in triples if _key(t[0]) not in objects):
        chain, link = [], start
        while link is not None:
            subject, relation, obj = link
            pages = by_title.get(_key(subject), [])
            fact = _fact(str(pages[0].get("text", "")), obj) if len(pages) == 1 else None
            if fact is None or ": " in subject:
                return None
            sub = f"{'Who' if relation in PERSON_RELATIONS else 'What'} is the {relation} of {subject}?"
            chain.append(_hop(sub, f"{subject} {relation}", obj, fact, pages[0]))
            used += 1
            link = next((t for t in triples if _key(t[0]) == _key(obj)), None)
            if used > len(triples):  # a cycle
                return None
        chains.append(chain)
    if not chains or used != len(triples):
        return None
    answer = normalize_answer(str(task.get("answer", "")))
    if len(chains) == 1 and normalize_answer(chains[0][-1]["answer"]) != answer:
        return None
    return {**task, "meta": {**meta, "rationale": chains}}


# relations whose object is a person: their sub-question asks "Who is ...", others "What is ..."
PERSON_RELATIONS = frozenset({"father", "mother", "spouse", "child", "sibling", "director",
                              "composer", "performer", "producer", "editor", "creator", "author"})


def with_rationale(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task with a rationale: its own (a generated world's), else one built from MuSiQue's
    decomposition or 2WikiMultihopQA's evidences; None when it has none that can be played."""
    if chains_of(task):
        return dict(task)
    return from_decomposition(task) or from_evidences(task)


def _hop(sub_question: str, query: str, answer: str, fact: str,
         page: Mapping[str, Any]) -> dict[str, str]:
    """One hop of a rationale, read on `page` (the fields a generated world's hops carry)."""
    return {"sub_question": sub_question, "query": query, "answer": answer, "fact": fact,
            "doc_id": str(page["doc_id"]), "title": str(page.get("title", ""))}


def _sentences(text: str) -> list[str]:
    """The text's sentences: split after . ! ? before a capital, digit or quote, except after
    an initial or a common abbreviation ("Mr.", "St.", "J.")."""
    # a regex splitter, not a library's (NLTK's punkt would be a large dependency for this):
    # paragraphs here are clean encyclopaedia prose, and a sentence cut at an abbreviation
    # the list lacks only shortens the fact, which is still checked to hold the answer
    out: list[str] = []
    for part in _SENTENCE_END.split(text):
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


_ABBREVIATION = re.compile(r"(?:^|\s)(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|No|vs|Inc|Co|Ltd|Gen|Col|"
                           r"Capt|Lt|Sgt|Rev|Prof|U\.S|U\.K)\.$")


def _question(text: str) -> str:
    """A decomposition step as a question: MuSiQue's `entity >> relation` form becomes
    "What is the relation of entity?"; the first letter upper-case, one question mark."""
    text = text.strip().rstrip("?").strip()
    if ">>" in text:
        entity, relation = (part.strip() for part in text.split(">>", 1))
        text = f"What is the {relation} of {entity}"
    return text[:1].upper() + text[1:] + "?"


def _fact(text: str, answer: str) -> str | None:
    """The first sentence of `text` that holds `answer` (normalised), cut to `FACT_WORDS`
    words (from its start, or ending just past the answer), without its closing stop; None
    if no sentence holds it."""
    want = normalize_answer(answer)
    for sentence in _sentences(text):
        if want and want in normalize_answer(sentence):
            words = sentence.split()
            if len(words) > FACT_WORDS:
                at = next((i for i in range(len(words))
                           if want.split()[0] in normalize_answer(words[i])), 0)
                end = max(FACT_WORDS, min(len(words), at + len(want.split()) + 2))
                words = words[end - FACT_WORDS:end]
            fact = " ".join(words).rstrip(".")
            return fact if want in normalize_answer(fact) else None
    return None


class ChainTeacher(BaseChatModel):
    """Answers each agent's prompt as a policy that knows the task's gold chain would."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chains: dict[str, list[list[dict[str, str]]]]  # by normalised question
    answers: dict[str, str]
    prompts: dict[str, str] = {}  # role -> prompt file the graph renders (and the reply format)

    @classmethod
    def for_tasks(cls, tasks: Iterable[Mapping[str, Any]],
                  prompts: Mapping[str, str] | None = None) -> ChainTeacher:
        """A teacher for every task that carries a rationale (`prompts`: as a policy card's)."""
        rows = [t for t in tasks if chains_of(t)]
        return cls(chains={_key(t["question"]): chains_of(t) for t in rows},
                   answers={_key(t["question"]): str(t["answer"]) for t in rows},
                   prompts=dict(prompts or {}))

    @property
    def _llm_type(self) -> str:
        return "sleuth-chain-teacher"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        role = str(((run_manager.metadata if run_manager else None) or {}).get("sleuth_role", ""))
        prompt = str(messages[-1].content)
        key = _key(_field(prompt, "Question"))
        if key not in self.chains:
            raise ValueError(f"the teacher knows no rationale for {_field(prompt, 'Question')!r}")
        reply = {"planner": self._plan, "searcher": self._search,
                 "writer": self._write}.get(role, lambda *_: "no")(key, prompt)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])

    def _plan(self, key: str, prompt: str) -> str:
        numbers = {m.group(2): int(m.group(1)) for m in _EVIDENCE.finditer(prompt)}
        found = [f"{h['fact']} [{numbers[h['title']]}]." for chain in self.chains[key]
                 for h in chain if h["title"] in numbers]
        todo = [next(h for h in chain if h["title"] not in numbers)["sub_question"]
                for chain in self.chains[key] if any(h["title"] not in numbers for h in chain)]
        return planner_reply(found, todo, self.prompts.get("planner"))

    def _search(self, key: str, prompt: str) -> str:
        sub = _field(prompt, "Sub-question")
        hop = next((h for chain in self.chains[key] for h in chain if h["sub_question"] == sub),
                   None)
        if hop is None:  # a sub-question the teacher did not ask: search it as it is
            return f"<search>{sub}</search>"
        retry = "found nothing new" in prompt  # an earlier query of this branch missed
        return f"<search>{hop['title'] if retry else hop['query']}</search>"

    def _write(self, key: str, prompt: str) -> str:
        numbers = {m.group(2): int(m.group(1)) for m in _EVIDENCE.finditer(prompt)}
        hops = [h for chain in self.chains[key] for h in chain]
        if any(h["title"] not in numbers for h in hops):
            return writer_reply("The evidence does not hold every step.", "unknown",
                                self.prompts.get("writer"))
        facts = " ".join(f"{h['fact']} [{numbers[h['title']]}]." for h in hops)
        return writer_reply(facts, self.answers[key], self.prompts.get("writer"))


def demonstrations(tasks: Iterable[Mapping[str, Any]], *, knowledge: Any = None, web: Any = None,
                   config: ResearchConfig | None = None, concurrency: int = 4,
                   prompts: Mapping[str, str] | None = None) -> list[Trajectory]:
    """The teacher's runs of these tasks through the research graph, the exactly right ones
    (`prompts`: the prompt files the student will run with, e.g. {"writer": REASONED})."""
    rows = [dict(t) for t in tasks if chains_of(t)]
    if not rows:
        raise ValueError("no task carries a rationale chain (generated worlds do: "
                         "tools.worlds.generate_world)")
    results = research_many(rows, model=ChainTeacher.for_tasks(rows, prompts), knowledge=knowledge,
                            web=web, config=config, concurrency=concurrency)
    return [r.trajectory for r in results
            if r.trajectory is not None and rewards.exact_match(r.trajectory) == 1.0]


__all__ = ["ChainTeacher", "chains_of", "demonstrations", "from_decomposition", "from_evidences",
           "with_rationale"]
