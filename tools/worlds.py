"""Procedural task worlds: fictional encyclopedias with multi-hop questions.

`generate_world(seed, n_tasks)` invents countries, cities, people, organisations and works
and their relations, writes one encyclopedia-style page per entity, and asks bridge and
comparison questions of 2-4 hops whose gold answers and gold pages are known. The facts are
fictional, so no model can answer from memory; the same seed always gives the same world.

Each fact lives on exactly one page (a work's page names its creator, a person's page does
not list their works), so a bridge question cannot be answered from a single page.

Difficulty knobs: `hops` (which chain lengths to ask), `distractors` (extra pages shipped
with each task, chosen to resemble the gold pages), `paraphrase` (probability that a fact or
question uses a varied wording instead of the canonical one), `comparison_share`.
Tasks are written in the task JSONL format of ../shared/data. Each task's `meta.rationale`
is its gold reasoning chain — one list of hops per chain followed (two for a comparison),
each hop a sub-question, a query that finds its page, the intermediate answer and that
page's doc id and title — for supervised warm starts ("rationale chains").

Conflict worlds (`conflicts=`, a share of the bridge tasks, RAMDocs-style) add two kinds of
conflicting evidence, each confined to its task (an entity is chosen only if no other task's
chain names it): an *ambiguous* name (a second entity shares the question's anchor name but
leads to another answer, so both answers are valid) and *misinformation* (a copy of the last
hop's page asserting a wrong value, outnumbered by the true page and a reworded copy of it).
`conflicts=True` means a share of one half. In a conflict world every task carries `answers`
(all valid; `answer` is the first) and `wrong_answers`, and a conflict task `meta.conflict`.
With conflicts off nothing changes: the world is byte-for-byte the one generated before.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.documents import content_id
from tools.text import normalize_answer

# --------------------------------------------------------------------------- vocabulary

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s",
           "st", "t", "th", "v", "z", "qu", "sk", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou", "ia"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "v", "sh"]
_SURNAME_ENDS = ["ic", "ov", "ard", "sen", "ley", "mont", "ford", "ani", "elli", "quist",
                 "berg", "wick", "ez", "ko", "dottir", "ane"]
_CITY_ENDS = ["haven", "mark", "dor", "ford", "holm", "vale", "port", "burg", "stead", "mere",
              "wick", "gate"]
_COUNTRY_ENDS = ["ia", "land", "or", "esh", "avia", "istan", "onia", "ar"]
_ADJ = ["Glass", "Silent", "Hollow", "Crimson", "Northern", "Last", "Paper", "Iron", "Quiet",
        "Burning", "Distant", "Salt", "Amber", "Winter", "Golden", "Broken", "Hidden", "Pale",
        "Seventh", "Wandering", "Copper", "Velvet", "Bitter", "Sleeping"]
_NOUN = ["Orchard", "Harbour", "Lantern", "River", "Garden", "Tower", "Mirror", "Season",
         "Archive", "Meadow", "Bridge", "Compass", "Voyage", "Anthem", "Cathedral", "Shadow",
         "Letter", "Island", "Engine", "Chorus", "Festival", "Lighthouse", "Clockmaker", "Fox"]

# work kind -> (creator role, creator verb, organisation kind, organisation verb, occupation)
_WORK_KINDS = {
    "novel": ("author", "written", "publisher", "published", "novelist"),
    "film": ("director", "directed", "film studio", "produced", "film director"),
    "opera": ("composer", "composed", "opera company", "premiered", "composer"),
}
_PAST = {"written": "wrote", "directed": "directed", "composed": "composed"}
_EMPLOYER_KINDS = ["university", "newspaper", "trading company"]
_OTHER_JOBS = ["physicist", "architect", "journalist", "historian", "engineer", "painter"]

_FILLERS = {
    "person": ["{s} is remembered for a careful, patient way of working.",
               "Colleagues described {s} as private and exacting.",
               "{s} rarely gave interviews."],
    "work": ["Critics were divided on its merits.", "It has been revised several times.",
             "It remains widely discussed."],
    "org": ["It grew steadily over the following decades.", "It has changed owners twice.",
            "Its archives are open to researchers."],
    "city": ["The old town is known for its narrow streets.", "It lies on a broad river plain.",
             "Its market square hosts a weekly fair."],
}


def _a(word: str) -> str:
    """The word with its indefinite article: "an opera", "a novel"."""
    vowel = word[0].lower() in "aeiou" and not word.lower().startswith(("uni", "eu"))
    return f"{'an' if vowel else 'a'} {word}"


def _cap(text: str) -> str:
    """Upper-case the first letter only ("a Meadow" -> "A Meadow")."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- entities


@dataclass
class Entity:
    """A thing of the world: its kind, name, facts, and its page once written."""

    key: str
    kind: str  # country | city | person | org | work
    name: str
    facts: dict[str, Any] = field(default_factory=dict)
    doc_id: str = ""
    text: str = ""

    @property
    def surname(self) -> str:
        """Last word of a person's name (the encyclopedia's short form)."""
        return self.name.split()[-1]


@dataclass
class World:
    """A generated world: its pages (`docs`) and its questions (`tasks`)."""

    seed: int
    docs: list[dict[str, Any]]
    tasks: list[dict[str, Any]]

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write `corpus.jsonl` and `tasks.jsonl` into a folder; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        corpus, tasks = out / "corpus.jsonl", out / "tasks.jsonl"
        with corpus.open("w", encoding="utf-8") as fh:
            for d in self.docs:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        with tasks.open("w", encoding="utf-8") as fh:
            for t in self.tasks:
                fh.write(json.dumps(t, ensure_ascii=False) + "\n")
        return corpus, tasks


class _Names:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _word(self, syllables: int) -> str:
        r = self.rng
        return "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS)
                       for _ in range(syllables)).capitalize()

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted")

    def person(self, surnames: list[str]) -> str:
        return self.unique(lambda: f"{self._word(self.rng.choice([1, 2]))} "
                                   f"{self.rng.choice(surnames)}")

    def surname(self) -> str:
        return self.unique(lambda: self._word(self.rng.choice([1, 2]))
                           + self.rng.choice(_SURNAME_ENDS))

    def place(self, ends: list[str]) -> str:
        def make() -> str:
            word, end = self._word(self.rng.choice([1, 2])), self.rng.choice(ends)
            return (word[:-1] if word[-1] in "aeiou" and end[0] in "aeiou" else word) + end
        return self.unique(make)

    def title(self) -> str:
        r = self.rng
        patterns = [lambda: f"The {r.choice(_ADJ)} {r.choice(_NOUN)}",
                    lambda: f"{r.choice(_NOUN)} of the {r.choice(_ADJ)} {r.choice(_NOUN)}",
                    lambda: f"{_cap(_a(r.choice(_NOUN)))} for {self._word(2)}"]
        return self.unique(lambda: r.choice(patterns)())


# --------------------------------------------------------------------------- the world


class _Builder:
    def __init__(self, seed: int, n_tasks: int, paraphrase: float):
        self.rng = random.Random(seed)
        self.seed = seed
        self.paraphrase = paraphrase
        self.names = _Names(self.rng)
        self.entities: dict[str, Entity] = {}
        self.extra_pages: list[dict[str, Any]] = []  # misinformation pages, reworded true pages
        scale = max(n_tasks, 12)
        self.countries = [self._add("country", self.names.place(_COUNTRY_ENDS))
                          for _ in range(max(5, scale // 10))]
        self.cities = [self._add("city", self.names.place(_CITY_ENDS),
                                 country=self.rng.choice(self.countries).key,
                                 founded=self.rng.randint(700, 1850))
                       for _ in range(max(10, scale // 2))]
        surnames = [self.names.surname() for _ in range(max(8, scale // 2))]
        self.people = []
        for _ in range(max(24, int(scale * 1.5))):
            self.people.append(self._add("person", self.names.person(surnames),
                                         born=self.rng.randint(1850, 1990),
                                         birth_city=self.rng.choice(self.cities).key))
        self.orgs = []
        for kind in [k[2] for k in _WORK_KINDS.values()] + _EMPLOYER_KINDS:
            for _ in range(max(3, scale // 8)):
                founder = self.rng.choice(self.people)
                self.orgs.append(self._add("org", self._org_name(kind), org_kind=kind,
                                           founded=min(founder.facts["born"] + self.rng.randint(25, 60),
                                                       2020),
                                           founder=founder.key,
                                           hq=self.rng.choice(self.cities).key))
        employers = [o for o in self.orgs if o.facts["org_kind"] in _EMPLOYER_KINDS]
        for p in self.people:
            if self.rng.random() < 0.7:
                p.facts["employer"] = self.rng.choice(employers).key
        self.works = []
        kinds = list(_WORK_KINDS)
        for i in range(max(24, int(scale * 1.5))):
            kind = kinds[i % len(kinds)]
            job = _WORK_KINDS[kind][4]
            creator = self.rng.choice([p for p in self.people
                                       if p.facts.get("occupation") in (None, job)])
            creator.facts["occupation"] = job
            org = self.rng.choice([o for o in self.orgs if o.facts["org_kind"] == _WORK_KINDS[kind][2]])
            self.works.append(self._add("work", self.names.title(), work_kind=kind,
                                        year=min(creator.facts["born"] + self.rng.randint(22, 60), 2024),
                                        creator=creator.key, org=org.key))
        for p in self.people:
            p.facts.setdefault("occupation", self.rng.choice(_OTHER_JOBS))
        for e in self.entities.values():
            self._write_page(e)

    def _add(self, kind: str, name: str, **facts: Any) -> Entity:
        e = Entity(key=f"{kind}:{len(self.entities)}", kind=kind, name=name, facts=facts)
        self.entities[e.key] = e
        return e

    def _org_name(self, kind: str) -> str:
        r, n = self.rng, self.names
        city = lambda: r.choice(self.cities).name  # noqa: E731
        makers = {"publisher": lambda: f"{n._word(2)} Press",
                  "film studio": lambda: f"{r.choice(_ADJ)} {n._word(1)} Pictures",
                  "opera company": lambda: f"{city()} Opera Company",
                  "university": lambda: f"University of {city()}",
                  "newspaper": lambda: f"The {city()} {r.choice(['Courier', 'Herald', 'Gazette'])}",
                  "trading company": lambda: f"{n._word(2)} Trading Company"}
        return n.unique(makers[kind])

    def get(self, key: str) -> Entity:
        return self.entities[key]

    def pick(self, variants: list[str]) -> str:
        """The canonical wording, or with probability `paraphrase` another one."""
        if len(variants) > 1 and self.rng.random() < self.paraphrase:
            return self.rng.choice(variants[1:])
        return variants[0]

    # ------------------------------------------------------------------ pages

    def _write_page(self, e: Entity) -> None:
        f, g, pick = e.facts, self.get, self.pick
        if e.kind == "country":
            sents = [f"{e.name} is a country."]
        elif e.kind == "city":
            country = g(f["country"]).name
            sents = [pick([f"{e.name} is a city in {country}.",
                           f"{e.name} is a town located in {country}.",
                           f"Located in {country}, {e.name} is a regional centre."]),
                     pick([f"It was founded in {f['founded']}.",
                           f"The settlement dates its founding to {f['founded']}.",
                           f"{e.name} was established in {f['founded']}."])]
        elif e.kind == "person":
            s = e.surname
            sents = [pick([f"{e.name} (born {f['born']}) is {_a(f['occupation'])}.",
                           f"{e.name} is {_a(f['occupation'])} born in {f['born']}.",
                           f"Born in {f['born']}, {e.name} is {_a(f['occupation'])}."]),
                     pick([f"{s} was born in {g(f['birth_city']).name}.",
                           f"{s} is a native of {g(f['birth_city']).name}.",
                           f"{s} grew up in {g(f['birth_city']).name}, where {s} was born."])]
            if "employer" in f:
                sents.append(pick([f"{s} worked for {g(f['employer']).name}.",
                                   f"For many years {s} was employed by {g(f['employer']).name}.",
                                   f"{s} held a post at {g(f['employer']).name}."]))
        elif e.kind == "org":
            founder = g(f["founder"]).name
            sents = [pick([f"{e.name} is {_a(f['org_kind'])} founded in {f['founded']} by {founder}.",
                           f"{founder} founded {e.name}, {_a(f['org_kind'])}, in {f['founded']}.",
                           f"Established in {f['founded']} by {founder}, {e.name} is {_a(f['org_kind'])}."]),
                     pick([f"Its headquarters are in {g(f['hq']).name}.",
                           f"{e.name} is based in {g(f['hq']).name}.",
                           f"The {f['org_kind']} has its head office in {g(f['hq']).name}."])]
        else:  # work
            role, verb, okind, overb, _ = _WORK_KINDS[f["work_kind"]]
            creator, org = g(f["creator"]).name, g(f["org"]).name
            sents = [pick([f"{e.name} is a {f['year']} {f['work_kind']} {verb} by {creator}.",
                           f"{e.name} ({f['year']}) is {_a(f['work_kind'])} by the {role} {creator}.",
                           f"{creator} {_PAST[verb]} the {f['work_kind']} {e.name}, "
                           f"first seen in {f['year']}."]),
                     pick([f"It was {overb} by {org}.",
                           f"The {f['work_kind']} was {overb} by the {okind} {org}.",
                           f"{org} {overb} it."])]
        sents.append(self.rng.choice(_FILLERS.get(e.kind, ["It is little known abroad."]))
                     .format(s=e.name.split()[-1]))
        e.text = " ".join(sents)
        e.doc_id = content_id(e.name, e.text, prefix=f"world{self.seed}")

    def doc(self, e: Entity, gold: bool) -> dict[str, Any]:
        return {"doc_id": e.doc_id, "title": e.name, "text": e.text, "gold": gold}


# --------------------------------------------------------------------------- questions

# A chain walks relations from an anchor entity; each step names the fact to follow.
# (name, anchor kind, relation path, question variants)
_CHAINS: list[tuple[str, str, list[str], list[str]]] = [
    ("work-creator-birthplace", "work", ["creator", "birth_city"],
     ["In which city was the {role} of the {wk} {w} born?",
      "Where was the {role} of {w} born?"]),
    ("work-creator-birthyear", "work", ["creator", "born"],
     ["In what year was the {role} of the {wk} {w} born?",
      "When was the {role} of {w} born?"]),
    ("work-org-hq", "work", ["org", "hq"],
     ["In which city is the {okind} that {overb} {w} based?",
      "Where does the {okind} of the {wk} {w} have its headquarters?"]),
    ("work-org-founded", "work", ["org", "founded"],
     ["In what year was the {okind} that {overb} {w} founded?",
      "When was the {okind} of {w} founded?"]),
    ("org-founder-birthplace", "org", ["founder", "birth_city"],
     ["In which city was the founder of {o} born?", "Where was the founder of {o} born?"]),
    ("person-employer-hq", "person", ["employer", "hq"],
     ["In which city is the employer of {p} based?",
      "Where is the organisation that {p} worked for headquartered?"]),
    ("person-birthplace-country", "person", ["birth_city", "country"],
     ["In which country was {p} born?", "{p} was born in a city of which country?"]),
    ("work-creator-birthplace-country", "work", ["creator", "birth_city", "country"],
     ["In which country was the {role} of the {wk} {w} born?",
      "The {role} of {w} was born in which country?"]),
    ("work-org-founder-birthyear", "work", ["org", "founder", "born"],
     ["In what year was the founder of the {okind} that {overb} {w} born?",
      "When was the person who founded the {okind} of {w} born?"]),
    ("person-employer-hq-country", "person", ["employer", "hq", "country"],
     ["In which country is the organisation that {p} worked for headquartered?",
      "The employer of {p} is based in which country?"]),
    ("work-creator-employer-founded", "work", ["creator", "employer", "founded"],
     ["In what year was the employer of the {role} of {w} founded?",
      "When was the organisation that employed the {role} of the {wk} {w} founded?"]),
    ("work-creator-employer-hq-country", "work", ["creator", "employer", "hq", "country"],
     ["In which country is the employer of the {role} of the {wk} {w} based?",
      "The {role} of {w} worked for an organisation headquartered in which country?"]),
    ("work-org-founder-birthplace-country", "work", ["org", "founder", "birth_city", "country"],
     ["In which country was the founder of the {okind} that {overb} {w} born?",
      "The person who founded the {okind} of {w} was born in which country?"]),
]

# (name, kind, fact path to a number, question variants, "earlier" wins)
_COMPARISONS: list[tuple[str, str, list[str], list[str]]] = [
    ("compare-org-founded", "org", ["founded"],
     ["Which was founded earlier, {a} or {b}?", "Of {a} and {b}, which is older?"]),
    ("compare-person-born", "person", ["born"],
     ["Who was born first, {a} or {b}?", "Which of {a} and {b} was born earlier?"]),
    ("compare-city-founded", "city", ["founded"],
     ["Which city was founded first, {a} or {b}?", "Is {a} or {b} the older city?"]),
    ("compare-work-creator-born", "work", ["creator", "born"],
     ["Which {wk} has the older {role}, {a} or {b}?",
      "Whose {role} was born first: the {wk} {a} or the {wk} {b}?"]),
]


def _walk(b: _Builder, anchor: Entity, path: list[str]) -> list[Entity] | None:
    """Entities visited along the path (anchor first), or None if a fact is missing."""
    chain = [anchor]
    for rel in path[:-1]:
        key = chain[-1].facts.get(rel)
        if key is None:
            return None
        chain.append(b.get(key))
    return chain if path[-1] in chain[-1].facts else None


def _value(b: _Builder, e: Entity, rel: str) -> str:
    v = e.facts[rel]
    return b.get(v).name if isinstance(v, str) and v in b.entities else str(v)


# relation -> (sub-question about the entity, search keyword, the fact as a sentence);
# {e} is the entity's name, {a} the fact's value
_HOPS = {
    "creator": ("Who {verb} {e}?", "{role}", "{e} was {verbed} by {a}"),
    "org": ("Which {okind} {overb} {e}?", "{okind}", "{e} was {overb} by {a}"),
    "founder": ("Who founded {e}?", "founder", "{e} was founded by {a}"),
    "employer": ("Who did {e} work for?", "worked for", "{e} worked for {a}"),
    "birth_city": ("Where was {e} born?", "born", "{e} was born in {a}"),
    "country": ("In which country is {e}?", "country", "{e} is in {a}"),
    "hq": ("Where is {e} based?", "headquarters", "{e} is based in {a}"),
    "born": ("When was {e} born?", "born", "{e} was born in {a}"),
    "founded": ("When was {e} founded?", "founded", "{e} was founded in {a}"),
}


def _steps(b: _Builder, chain: list[Entity], path: list[str]) -> list[dict[str, str]]:
    """The rationale of a chain: per hop, the sub-question, a query that finds the hop's page,
    the intermediate answer, the fact as a sentence, and the page it is read from."""
    steps = []
    for e, rel in zip(chain, path, strict=True):
        slots = {"e": e.name, "a": _value(b, e, rel), "verb": "", "verbed": "", "role": "",
                 "okind": "", "overb": ""}
        if e.kind == "work":
            role, verbed, okind, overb, _ = _WORK_KINDS[e.facts["work_kind"]]
            slots.update(verb=_PAST[verbed], verbed=verbed, role=role, okind=okind, overb=overb)
        question, keyword, fact = _HOPS[rel]
        steps.append({"sub_question": question.format(**slots),
                      "query": f"{e.name} {keyword.format(**slots)}", "answer": slots["a"],
                      "fact": fact.format(**slots), "doc_id": e.doc_id, "title": e.name})
    return steps


def _slots(b: _Builder, e: Entity) -> dict[str, str]:
    if e.kind == "work":
        role, _, okind, overb, _ = _WORK_KINDS[e.facts["work_kind"]]
        return {"w": e.name, "wk": e.facts["work_kind"], "role": role, "okind": okind,
                "overb": overb}
    return {"p": e.name, "o": e.name}


def _bridge(b: _Builder, hops: set[int], used: set[tuple[str, str]]) -> dict[str, Any] | None:
    options = [c for c in _CHAINS if len(c[2]) in hops]
    name, kind, path, variants = b.rng.choice(options)
    pool = {"work": b.works, "person": b.people, "org": b.orgs}[kind]
    anchors = [e for e in pool if (name, e.key) not in used and _walk(b, e, path)]
    if not anchors:
        return None
    anchor = b.rng.choice(anchors)
    used.add((name, anchor.key))
    chain = _walk(b, anchor, path)
    assert chain is not None
    # the answer is named on the last page of the chain: its own page is not gold
    return {"template": name, "type": "bridge", "hops": len(path), "gold": chain,
            "question": b.pick(variants).format(**_slots(b, anchor)),
            "answer": _value(b, chain[-1], path[-1]), "steps": [_steps(b, chain, path)]}


def _comparison(b: _Builder, hops: set[int], used: set[tuple[str, str]]) -> dict[str, Any] | None:
    options = [c for c in _COMPARISONS if 2 * len(c[2]) in hops]
    if not options:
        return None
    name, kind, path, variants = b.rng.choice(options)
    pool = {"work": b.works, "person": b.people, "org": b.orgs, "city": b.cities}[kind]
    for _ in range(50):
        a, c = b.rng.sample(pool, 2)
        if kind == "work" and a.facts["work_kind"] != c.facts["work_kind"]:
            continue
        ca, cc = _walk(b, a, path), _walk(b, c, path)
        if ca is None or cc is None or (name, a.key + c.key) in used:
            continue
        va, vc = ca[-1].facts[path[-1]], cc[-1].facts[path[-1]]
        if va == vc:
            continue
        used.add((name, a.key + c.key))
        winner = a if va < vc else c
        slots = _slots(b, a) | {"a": a.name, "b": c.name}
        return {"template": name, "type": "comparison", "hops": 2 * len(path),
                "gold": ca + cc, "question": b.pick(variants).format(**slots),
                "answer": winner.name,
                "steps": [_steps(b, ca, path), _steps(b, cc, path)]}
    return None


def generate_world(seed: int = 0, n_tasks: int = 50, *, hops: tuple[int, ...] = (2, 3),
                   distractors: int = 6, paraphrase: float = 0.3,
                   comparison_share: float = 0.25, conflicts: bool | float = False) -> World:
    """Generate a deterministic world of fictional pages and `n_tasks` multi-hop questions."""
    share = 0.5 if conflicts is True else float(conflicts)
    if not 0.0 <= share <= 1.0:
        raise ValueError("conflicts must be a bool or a share in [0, 1]")
    if n_tasks < 1:
        raise ValueError("n_tasks must be >= 1")
    if not set(hops) <= {2, 3, 4}:
        raise ValueError(f"hops must be drawn from 2, 3, 4; got {hops}")
    if not 0.0 <= paraphrase <= 1.0 or not 0.0 <= comparison_share <= 1.0:
        raise ValueError("paraphrase and comparison_share must lie in [0, 1]")
    b = _Builder(seed, n_tasks, paraphrase)
    used: set[tuple[str, str]] = set()
    tasks: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    attempts = 0
    while len(tasks) < n_tasks:
        attempts += 1
        if attempts > n_tasks * 50:
            raise RuntimeError(f"could only ask {len(tasks)} distinct questions; "
                               "use fewer tasks or more hops")
        want_cmp = b.rng.random() < comparison_share
        q = _comparison(b, set(hops), used) if want_cmp else _bridge(b, set(hops), used)
        if q is None:
            continue
        tasks.append(_task(b, len(tasks), q, distractors))
        questions.append(q)
    if share > 0:
        _add_conflicts(b, tasks, questions, share)
    docs = [{"doc_id": e.doc_id, "title": e.name, "text": e.text}
            for e in b.entities.values()] + b.extra_pages
    return World(seed=seed, docs=docs, tasks=tasks)


def _task(b: _Builder, i: int, q: dict[str, Any], n_distractors: int) -> dict[str, Any]:
    gold: list[Entity] = list({e.key: e for e in q["gold"]}.values())
    gold_keys = {e.key for e in gold}
    # distractors resemble the gold pages: same kind, and for people the same surname first
    similar: list[Entity] = []
    for g in gold:
        same = [e for e in b.entities.values() if e.kind == g.kind and e.key not in gold_keys]
        if g.kind == "person":
            same.sort(key=lambda e: e.surname != g.surname)
        similar.extend(same[:3] if g.kind == "person" else b.rng.sample(same, min(3, len(same))))
    pool = list({e.key: e for e in similar}.values())
    extra = b.rng.sample(pool, min(n_distractors, len(pool)))
    docs = [b.doc(e, True) for e in gold] + [b.doc(e, False) for e in extra]
    b.rng.shuffle(docs)
    return {"id": f"world{b.seed}-{i:04d}", "question": q["question"], "answer": q["answer"],
            "aliases": [], "type": q["type"], "source": f"world{b.seed}", "docs": docs,
            "meta": {"hops": q["hops"], "template": q["template"],
                     "chain": [e.name for e in q["gold"]], "rationale": q["steps"]}}


# --------------------------------------------------------------------------- conflicts

_PATHS = {name: path for name, _, path, _ in _CHAINS}


def _add_conflicts(b: _Builder, tasks: list[dict[str, Any]], questions: list[dict[str, Any]],
                   share: float) -> None:
    """Give a `share` of the bridge tasks an ambiguous name or misinformation (in place); an
    entity is used only when no other task's chain names it, so no other task is touched."""
    uses = Counter(name for q in questions for name in {e.name for e in q["gold"]})
    touched: set[str] = set()
    for task, q in zip(tasks, questions, strict=True):
        task.update(answers=[task["answer"]], wrong_answers=[])
        if q["type"] != "bridge" or b.rng.random() >= share:
            continue
        makers = [_ambiguous, _misinformation]
        b.rng.shuffle(makers)
        any(make(b, task, q, uses, touched) for make in makers)


def _add_docs(b: _Builder, task: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Add pages to a task (a page already there as a distractor becomes gold), reshuffled."""
    have = {d["doc_id"]: d for d in task["docs"]}
    for d in docs:
        if d["doc_id"] in have:
            have[d["doc_id"]]["gold"] = have[d["doc_id"]]["gold"] or d["gold"]
        else:
            task["docs"].append(d)
    b.rng.shuffle(task["docs"])


def _twin(b: _Builder, anchor: Entity, rel: str, other: Entity) -> Entity:
    """A second entity named like `anchor` whose `rel` is `other` (its dates made plausible)."""
    facts = {**anchor.facts, rel: other.key, "twin_of": anchor.key}
    if rel == "creator":
        facts["year"] = min(other.facts["born"] + b.rng.randint(22, 60), 2024)
    elif rel == "founder":
        facts["founded"] = min(other.facts["born"] + b.rng.randint(25, 60), 2020)
    return Entity(key=f"{anchor.kind}:{len(b.entities)}", kind=anchor.kind, name=anchor.name,
                  facts=facts)


def _ambiguous(b: _Builder, task: dict[str, Any], q: dict[str, Any], uses: Counter[str],
               touched: set[str]) -> bool:
    """A second entity shares the anchor's name and leads to another answer: both are valid."""
    path, anchor = _PATHS[q["template"]], q["gold"][0]
    if uses[anchor.name] != 1 or anchor.name in touched:
        return False
    old = b.get(anchor.facts[path[0]])
    pool = [e for e in b.entities.values() if e.kind == old.kind and e.key != old.key
            and "twin_of" not in e.facts
            and all(e.facts.get(k) == old.facts.get(k) for k in ("org_kind", "occupation"))]
    for other in b.rng.sample(pool, len(pool)):
        twin = _twin(b, anchor, path[0], other)
        chain = _walk(b, twin, path)
        if chain is None or any(e.name in touched for e in chain[1:]):
            continue
        value = _value(b, chain[-1], path[-1])
        if normalize_answer(value) == normalize_answer(task["answer"]):
            continue
        b.entities[twin.key] = twin
        b._write_page(twin)
        uses.update({e.name for e in chain[1:]} - {e.name for e in q["gold"]})
        touched.add(anchor.name)
        _add_docs(b, task, [b.doc(e, True) for e in chain])
        task["answers"] = [task["answer"], value]
        task["meta"]["conflict"] = {"kind": "ambiguous", "name": anchor.name,
                                    "chain": [e.name for e in chain],
                                    "rationale": [_steps(b, chain, path)]}
        return True
    return False


def _wrong_value(b: _Builder, e: Entity, rel: str) -> Any:
    """Another value of the fact `rel` of `e`: a nearby year, or another entity of its kind."""
    value = e.facts[rel]
    if isinstance(value, int):
        return value + b.rng.choice([-1, 1]) * b.rng.randint(3, 30)
    true = b.get(value)
    return b.rng.choice([x for x in b.entities.values() if x.kind == true.kind
                         and x.name != true.name and "twin_of" not in x.facts]).key


def _page(b: _Builder, e: Entity, paraphrase: float, **facts: Any) -> Entity:
    """A page about `e` (a copy, not in the world's entities) with these facts changed."""
    copy = Entity(key=e.key, kind=e.kind, name=e.name, facts={**e.facts, **facts})
    b.paraphrase, saved = paraphrase, b.paraphrase
    b._write_page(copy)
    b.paraphrase = saved
    return copy


def _misinformation(b: _Builder, task: dict[str, Any], q: dict[str, Any], uses: Counter[str],
                    touched: set[str]) -> bool:
    """A copy of the last hop's page asserts a wrong value; the true page and a reworded copy
    of it outnumber it."""
    path, last = _PATHS[q["template"]], q["gold"][-1]
    rel = path[-1]
    if uses[last.name] != 1 or last.name in touched:
        return False
    wrong = _page(b, last, b.paraphrase, **{rel: _wrong_value(b, last, rel)})
    wrong_value = _value(b, wrong, rel)
    support = next((p for p in (_page(b, last, 1.0) for _ in range(5))
                    if p.doc_id != last.doc_id), None)
    if wrong.doc_id == last.doc_id or normalize_answer(wrong_value) == normalize_answer(task["answer"]):
        return False
    touched.add(last.name)
    pages = [(wrong, False)] + ([(support, True)] if support is not None else [])
    b.extra_pages += [{"doc_id": p.doc_id, "title": p.name, "text": p.text} for p, _ in pages]
    _add_docs(b, task, [b.doc(page, gold) for page, gold in pages])
    task["wrong_answers"] = [wrong_value]
    task["meta"]["conflict"] = {
        "kind": "misinformation", "name": last.name, "fact": rel, "wrong": wrong_value,
        "misinformation_doc_ids": [wrong.doc_id],
        "support_doc_ids": [last.doc_id] + ([support.doc_id] if support is not None else [])}
    return True
