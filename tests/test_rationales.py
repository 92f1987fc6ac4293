"""Rationale chains: generated tasks carry their gold chains, and the chain teacher plays them
through the real agents' prompts into demonstrations that are right."""

from __future__ import annotations

import pytest

from graph import ResearchConfig
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from tools.worlds import generate_world
from training import rewards
from training.rationales import (
    FACT_WORDS,
    ChainTeacher,
    chains_of,
    demonstrations,
    from_decomposition,
    with_rationale,
)


@pytest.fixture(scope="module")
def world():
    return generate_world(11, 24, hops=(2, 3))


@pytest.fixture(scope="module")
def world_kb(world, tmp_path_factory):
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb"), embedder=HashEmbedder())
    kb.ingest({d["doc_id"]: d for t in world.tasks for d in t["docs"]}.values(), progress=False)
    return kb


def test_every_generated_task_carries_a_chain_that_reaches_its_answer(world):
    pages = {d["doc_id"]: d for t in world.tasks for d in t["docs"]}
    for task in world.tasks:
        chains = chains_of(task)
        assert len(chains) == (2 if task["type"] == "comparison" else 1)
        hops = [h for chain in chains for h in chain]
        gold = {d["doc_id"] for d in task["docs"] if d["gold"]}
        assert {h["doc_id"] for h in hops} == gold  # the chain reads exactly the gold pages
        for h in hops:  # each intermediate answer is written on the page it is read from
            assert h["answer"] in pages[h["doc_id"]]["text"] and h["title"] in h["query"]
        if task["type"] == "bridge":
            assert chains[0][-1]["answer"] == task["answer"]
            for prev, nxt in zip(chains[0], chains[0][1:], strict=False):
                assert nxt["title"] == prev["answer"]  # each hop starts where the last ended


def test_the_teacher_plays_chains_through_the_agents_prompts(world, world_kb):
    demos = demonstrations(world.tasks, knowledge=world_kb,
                           config=ResearchConfig(search_mode="fts", temperature=0.0))
    assert len(demos) >= 0.8 * len(world.tasks)  # right runs only; FTS misses a few pages
    assert all(rewards.exact_match(t) == 1.0 for t in demos)
    three_hops = [t for t in demos if t.question in
                  {x["question"] for x in world.tasks if x["meta"]["hops"] == 3}]
    assert three_hops
    t = three_hops[0]
    roles = [s.role for s in t.model_steps]
    assert roles[:2] == ["planner", "searcher"] and roles[-1] == "writer"
    assert roles.count("planner") >= 3  # one hop per round, then done
    assert t.model_steps[0].prompt_messages[0]["role"] == "system"  # the agents' real prompts
    answer, facts = t.model_steps[-1].text.split("</answer>")  # the default writer: answer first
    assert answer.startswith("<answer>") and "[1]" in facts
    assert rewards.evidence_recall(t) == 1.0 and rewards.citation_precision(t) == 1.0


def test_the_teacher_retries_with_another_query_after_a_miss(world):
    task = next(t for t in world.tasks if t["type"] == "bridge")
    hop = chains_of(task)[0][0]
    teacher = ChainTeacher.for_tasks([task])
    first = teacher._search(teacher_key := " ".join(task["question"].split()).lower(),
                            f"Question: {task['question']}\nSub-question: {hop['sub_question']}\n"
                            "Earlier queries: none")
    retry = teacher._search(teacher_key, f"Question: {task['question']}\nSub-question: "
                            f"{hop['sub_question']}\nEarlier queries:\n- \"x\" found nothing new")
    assert first == f"<search>{hop['query']}</search>" and retry != first
    with pytest.raises(ValueError, match="no task carries a rationale"):
        demonstrations([{"id": "q", "question": "?", "answer": "a", "docs": []}], knowledge=object())


def test_the_reasoned_planner_states_what_it_found_before_it_asks(world, world_kb):
    from agents.parsing import parse_plan
    from agents.planner import REASONED, planner_reply

    assert planner_reply([], ["Who?"], REASONED) == \
        "<found>nothing yet</found>\n<subquestions>\n1. Who?\n</subquestions>"
    assert planner_reply(["A is B [1]."], [], REASONED) == "<found>A is B [1].</found>\n<done>"
    assert planner_reply(["A is B [1]."], ["Who?"]) == "<subquestions>\n1. Who?\n</subquestions>"
    bridges = [t for t in world.tasks if t["type"] == "bridge"]
    demos = demonstrations(bridges, knowledge=world_kb, prompts={"planner": REASONED},
                           config=ResearchConfig(search_mode="fts", temperature=0.0))
    assert len(demos) >= 0.8 * len(bridges)
    chain_of = {t["question"]: chains_of(t)[0] for t in bridges}
    for t in demos:
        plans = [s for s in t.model_steps if s.role == "planner"]
        assert "Evidence: none yet." in plans[0].prompt_messages[-1]["content"]
        assert plans[0].text.startswith("<found>nothing yet</found>")
        second = plans[1].text
        hop = chain_of[t.question][0]
        assert second.startswith(f"<found>{hop['fact']} [") and "</found>" in second
        plan = parse_plan(second)
        last = [h for h in chain_of[t.question] if h["fact"] in second][-1]
        assert plan.ok and (plan.done or last["answer"] in plan.sub_questions[0])  # names it
        for step in plans:  # done only with every hop's fact found
            if parse_plan(step.text).done:
                assert all(h["fact"] in step.text for h in chain_of[t.question])


def test_a_decomposition_becomes_a_chain_on_real_pages(musique_task: dict) -> None:
    task = from_decomposition(musique_task)
    assert task is not None and task["meta"]["question_decomposition"]  # the original is kept
    first, second = chains_of(task)[0]
    assert first == {"sub_question": "What is the director of Jump for Glory?",
                     "query": "What is the director of Jump for Glory", "answer": "Raoul Walsh",
                     "fact": "Jump for Glory is a 1937 British romantic drama film directed by "
                             "Raoul Walsh and starring",  # cut to FACT_WORDS words
                     "doc_id": "m:1", "title": "Jump for Glory"}
    assert second["sub_question"] == "Who was Raoul Walsh married to?"  # #1 is the first answer
    assert second["fact"].startswith("He was married to the actress Miriam Cooper")
    assert second["title"] == "Raoul Walsh"


@pytest.mark.parametrize("breakage", ["no answer in its page", "a #2 ahead of its hop",
                                      "a title shared", "a title with a colon",
                                      "a support index out of range", "another final answer",
                                      "no decomposition"])
def test_a_decomposition_that_cannot_be_played_gives_none(breakage: str, musique_task: dict) -> None:
    task = musique_task
    steps, docs = task["meta"]["question_decomposition"], task["docs"]
    if breakage == "no answer in its page":
        steps[1]["answer"] = "Lillian Gish"
        task["answer"] = "Lillian Gish"
    elif breakage == "a #2 ahead of its hop":
        steps[1]["question"] = "who was #2 married to"
    elif breakage == "a title shared":
        docs[3]["title"] = "Raoul Walsh"
    elif breakage == "a title with a colon":
        docs[0]["title"] = "Jump for Glory: a film"
    elif breakage == "a support index out of range":
        steps[0]["paragraph_support_idx"] = 9
    elif breakage == "another final answer":
        task["answer"] = "Douglas Fairbanks Jr."
    else:
        del task["meta"]["question_decomposition"]
    assert from_decomposition(task) is None


def test_a_long_supporting_sentence_is_cut_around_its_answer(musique_task: dict) -> None:
    task = musique_task
    filler = " ".join(f"word{i}" for i in range(40))
    task["docs"][1]["text"] = f"Raoul Walsh {filler} married Miriam Cooper {filler}."
    fact = chains_of(from_decomposition(task))[0][1]["fact"]
    assert len(fact.split()) == FACT_WORDS and fact.endswith("married Miriam Cooper word0 word1")


def test_the_teacher_demonstrates_real_chains_through_the_graph(tmp_path, musique_task: dict) -> None:
    task = from_decomposition(musique_task)
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(task["docs"], progress=False)
    demos = demonstrations([task], knowledge=kb,
                           config=ResearchConfig(search_mode="fts", temperature=0.0))
    assert len(demos) == 1 and rewards.evidence_recall(demos[0]) == 1.0
    writer = demos[0].model_steps[-1].text
    assert writer.startswith("<answer>Miriam Cooper</answer>")
    assert "directed by Raoul Walsh" in writer and "married to the actress Miriam Cooper" in writer


def wiki2_task(kind: str) -> dict:
    """A 2WikiMultihopQA-style task: (subject, relation, object) triples and each subject's page."""
    pages = {"Mr. Fix-It": "Mr. Fix-It is a 1918 comedy film directed by Allan Dwan.",
             "Allan Dwan": "Allan Dwan (3 April 1885 – 28 December 1981) was a film director.",
             "Rauni Mollberg": "Rauni Mollberg (April 15, 1929 – 2007) was a Finnish director.",
             "Denham Studios": "Denham Studios was a film studio in Buckinghamshire."}
    docs = [{"doc_id": f"w:{i}", "title": t, "text": pages[t], "gold": t != "Denham Studios"}
            for i, t in enumerate(pages)]
    if kind == "compositional":
        question, answer = "When was the director of Mr. Fix-It born?", "3 April 1885"
        triples = [["Mr. Fix-It", "director", "Allan Dwan"], ["Allan Dwan", "date of birth", "3 April 1885"]]
    else:
        question, answer = "Who was born first, Allan Dwan or Rauni Mollberg?", "Allan Dwan"
        triples = [["Allan Dwan", "date of birth", "3 April 1885"],
                   ["Rauni Mollberg", "date of birth", "April 15, 1929"]]
    return {"id": kind, "question": question, "answer": answer, "type": kind, "source": "2wiki",
            "docs": docs, "meta": {"evidences": triples}}


def test_evidence_triples_become_chains_on_real_pages() -> None:
    task = with_rationale(wiki2_task("compositional"))
    (first, second), = chains_of(task)
    assert first["sub_question"] == "Who is the director of Mr. Fix-It?"  # a person: who
    assert (first["query"], first["answer"], first["title"]) == ("Mr. Fix-It director", "Allan Dwan",
                                                                 "Mr. Fix-It")
    assert first["fact"] == "Mr. Fix-It is a 1918 comedy film directed by Allan Dwan"
    assert second["sub_question"] == "What is the date of birth of Allan Dwan?"
    assert second["doc_id"] == "w:1" and second["answer"] == "3 April 1885"
    comparison = with_rationale(wiki2_task("comparison"))  # two chains; the answer is no hop's
    assert [[h["title"] for h in c] for c in chains_of(comparison)] == [["Allan Dwan"], ["Rauni Mollberg"]]


@pytest.mark.parametrize("breakage", ["object not on its page", "another final answer",
                                      "a subject without a page", "a subject's title shared",
                                      "a cycle"])
def test_evidence_triples_that_cannot_be_played_give_none(breakage: str) -> None:
    task = wiki2_task("compositional")
    triples = task["meta"]["evidences"]
    if breakage == "object not on its page":
        triples[1][2] = task["answer"] = "4 April 1885"
    elif breakage == "another final answer":
        task["answer"] = "1885"
    elif breakage == "a subject without a page":
        triples[0][0] = "The Iron Harbour"
    elif breakage == "a subject's title shared":
        task["docs"][3]["title"] = "Allan Dwan"
    else:
        triples.append(["3 April 1885", "film", "Mr. Fix-It"])
    assert with_rationale(task) is None


def test_with_rationale_keeps_a_generated_chain_and_builds_a_decomposition(world, musique_task) -> None:
    assert with_rationale(world.tasks[0]) == world.tasks[0]
    assert chains_of(with_rationale(musique_task)) == chains_of(from_decomposition(musique_task))
    assert with_rationale({"id": "q", "question": "?", "answer": "a", "docs": []}) is None
