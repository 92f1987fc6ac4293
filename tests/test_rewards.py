"""Rewards and training samples: hand-made trajectories, the farming case, loss masks."""

from __future__ import annotations

import doctest

import pytest
from scripted import ScriptedChatModel

import training.data
import training.rewards
from graph import ResearchConfig, TrajectoryStore, research_many
from graph.trajectory import Gold, ModelStep, ToolStep, Trajectory
from training import rewards
from training.data import build_samples, group_advantages, loss_mask, to_dataset

TASK = {"id": "t1", "question": "Where was Ada Lenn born?", "answer": "Varo",
        "aliases": ["Varo City"], "type": "bridge",
        "docs": [{"doc_id": "g1", "title": "Ada Lenn", "text": "Born in Varo.", "gold": True},
                 {"doc_id": "g2", "title": "Iron Harbour", "text": "By Ada Lenn.", "gold": True},
                 {"doc_id": "x", "title": "Bread", "text": "Flour.", "gold": False}]}
GOLD = Gold.from_task(TASK)


def search(*doc_ids: str) -> ToolStep:
    return ToolStep(tool="knowledge_base", input={"query": "q"},
                    output=[{"doc_id": d, "title": d, "text": ""} for d in doc_ids])


def traj(answer: str, steps: list, **kw) -> Trajectory:
    return Trajectory(task_id="t1", question=TASK["question"], answer=answer, steps=steps, **kw)


@pytest.mark.parametrize("module", [training.rewards, training.data])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_answer_metrics_use_aliases_and_squad_normalisation():
    assert rewards.exact_match(traj("varo city.", []), GOLD) == 1.0
    assert rewards.exact_match(traj("Varo, a city", []), GOLD) == 1.0  # articles dropped
    assert rewards.exact_match(traj("Varo, capital city", []), GOLD) == 0.0
    assert rewards.f1(traj("Varo, capital city", []), GOLD) == pytest.approx(0.8)  # vs "varo city"
    assert rewards.f1(traj("Oslo", []), GOLD) == 0.0


def test_persistence_pays_only_after_a_miss_and_only_when_right():
    right_after_miss = traj("Varo", [search("x"), search("g1"), search("x"), search("g2")])
    assert rewards.search_misses(right_after_miss, GOLD) == [True, False, True, False]
    assert rewards.searches_after_miss(right_after_miss, GOLD) == 2
    assert rewards.persistence(right_after_miss, GOLD) == pytest.approx(2 / 3)
    right_no_miss = traj("Varo", [search("g1", "g2")])
    assert rewards.persistence(right_no_miss, GOLD) == 0.0
    # the farming case: many searches, every one a miss, and a wrong answer earn nothing
    farming = traj("Oslo", [search("x")] * 30)
    assert rewards.persistence(farming, GOLD) == 0.0
    full = rewards.default()
    gave_up = traj("Oslo", [search("x")])  # missed once and answered anyway
    # a wrong run's misses before its evidence is complete are not charged (searching on is
    # what persistence teaches), but they earn nothing, and the model calls they take cost
    assert full(farming, GOLD) == full(gave_up, GOLD) < full(right_after_miss, GOLD)
    called = traj("Oslo", _run(*[search("x")] * 30))
    assert full(called, GOLD) < full(traj("Oslo", _run(search("x"))), GOLD)
    # finding the evidence at once beats finding it after misses: retries are not farmable
    assert full(right_after_miss, GOLD) < full(right_no_miss, GOLD)
    capped = traj("Varo", [search("x")] * 30 + [search("g1")])
    assert rewards.persistence(capped, GOLD) == 1.0  # capped at 3 retries
    assert full.scores(capped, GOLD)["cost"] == 0.0  # searches are not model calls
    spammy = traj("Varo", [ModelStep(parse_ok=True)] * 40 + [search("x"), search("g1")])
    assert full.scores(spammy, GOLD)["cost"] < 0  # but extra model calls cost


def test_persistence_pays_only_needed_retries():
    miss_then_find = traj("Varo", [search("x"), search("g1", "g2")])
    assert rewards.needed_retries(miss_then_find, GOLD) == 1
    assert rewards.persistence(miss_then_find, GOLD) == pytest.approx(1 / 3)
    # the evidence was complete after the first search: the retries after it were not needed
    padded = traj("Varo", [search("g1", "g2"), search("x"), search("x"), search("x")])
    assert rewards.searches_after_miss(padded, GOLD) == 2 and rewards.needed_retries(padded, GOLD) == 0
    assert rewards.persistence(padded, GOLD) == 0.0
    assert rewards.search_cost(padded, GOLD) == pytest.approx(-0.45)
    # a retry that brings the second gold page after a miss was needed
    partial = traj("Varo", [search("g1"), search("x"), search("g2")])
    assert rewards.needed_retries(partial, GOLD) == 1


def _run(*searches_: ToolStep, ok: tuple[bool, ...] = ()) -> list:
    """A realistic run: a plan, one searcher call per search, a writer call (parse results
    from `ok`, default all parsed)."""
    steps: list = [ModelStep(role="planner")]
    for s in searches_:
        steps += [ModelStep(role="searcher"), s]
    steps.append(ModelStep(role="writer"))
    calls = [s for s in steps if isinstance(s, ModelStep)]
    for i, call in enumerate(calls):
        call.parse_ok = ok[i] if i < len(ok) else True
    return steps


@pytest.mark.parametrize("base", [
    _run(search("g1", "g2")),
    _run(search("g1"), search("g2")),
    _run(search("x"), search("g1", "g2")),
    _run(search("x"), search("x"), search("g1"), search("x"), search("g2")),
    _run(search("g1"), search("g2"), ok=(False, False, True, False)),  # mostly malformed replies
])
def test_a_right_run_never_earns_more_by_adding_searches_that_find_nothing(base):
    reward = rewards.default()
    right = traj("Varo", base, citations=[{"doc_id": "g1"}])
    before = reward(right, GOLD)
    for junk in (search("x"), search("y", "z"), search()):
        for at in range(1, len(base)):  # after the first plan, before the writer
            added = [ModelStep(role="searcher", parse_ok=True), junk]  # a search is a call + a hit list
            padded = right.model_copy(update={"steps": base[:at] + added + base[at:]})
            assert reward(padded, GOLD) < before, (at, reward.scores(padded, GOLD))


def test_evidence_citations_format_cost():
    t = traj("Varo", [ModelStep(parse_ok=True), ModelStep(parse_ok=False), ModelStep(),
                      search("g1", "x")],
             citations=[{"doc_id": "g1"}, {"doc_id": "x"}, {"doc_id": "never-retrieved"}])
    assert rewards.evidence_recall(t, GOLD) == 0.5
    assert rewards.citation_precision(t, GOLD) == pytest.approx(1 / 3)
    assert rewards.format_rate(t, GOLD) == 0.5
    assert rewards.cost(t, GOLD) == 0.0
    scores = rewards.default().scores(t, GOLD)
    assert set(scores) == {"f1", "exact_match", "persistence", "evidence_recall",
                           "citation_precision", "format", "cost", "search_cost", "reward"}
    w = rewards.default().weights
    assert scores["reward"] == pytest.approx(sum(w[k] * scores[k] for k in w))


def test_knowledge_f1_evidence_f1_and_retrieval_accuracy_on_hand_made_runs():
    assert GOLD.doc_texts == ["Born in Varo.", "By Ada Lenn."]  # the gold documents' text
    # gold tokens: born in varo by ada lenn (6); the run's: varo ada lenn was born in varo 1 (8)
    grounded = traj("Varo", [], report="Ada Lenn was born in Varo [1].")
    assert rewards.knowledge_f1(grounded, GOLD) == pytest.approx(5 / 7)  # P 5/8, R 5/6
    assert rewards.knowledge_f1(traj("Varo", []), GOLD) == pytest.approx(2 / 7)  # P 1, R 1/6
    assert rewards.knowledge_f1(traj("", []), GOLD) == 0.0
    assert rewards.knowledge_f1(grounded, Gold(answer="Varo", doc_ids=["g1"])) == 0.0  # no texts

    # the writer read g1 and x (one of two right) and missed g2 (one of two gold found)
    half = traj("Varo", [], evidence=[{"doc_id": "g1", "chunk_id": "g1#0"},
                                      {"doc_id": "g1", "chunk_id": "g1#1"}, {"doc_id": "x"}])
    assert rewards.selected_doc_ids(half) == ["g1", "x"]  # documents, not chunks
    assert rewards.evidence_f1(half, GOLD) == 0.5
    assert rewards.evidence_f1(traj("Varo", [], evidence=[{"doc_id": "g2"}, {"doc_id": "g1"}]),
                               GOLD) == 1.0
    assert rewards.evidence_f1(traj("Varo", [], evidence=[{"doc_id": "x"}]), GOLD) == 0.0
    assert rewards.evidence_f1(traj("Varo", []), GOLD) == 0.0  # nothing selected

    found = traj("Varo", [search("x"), search("g1", "x")])
    assert rewards.retrieval_accuracy(found, GOLD) == rewards.evidence_recall(found, GOLD) == 0.5
    assert rewards.retrieval_accuracy(traj("Varo", [search("g2"), search("g1")]), GOLD) == 1.0


def test_trajectories_and_golds_stored_before_the_new_fields_load():
    old = {"question": "q", "answer": "Varo", "gold": {"answer": "Varo", "gold_doc_ids": ["g1"]}}
    t = Trajectory.model_validate(old)
    assert t.evidence == [] and t.gold.doc_ids == ["g1"] and t.gold.doc_texts == []
    assert rewards.evidence_f1(t) == rewards.knowledge_f1(t) == 0.0


def test_judge_with_any_chat_model():
    seen = []

    def script(role, messages):
        seen.append(messages[-1].content)
        return "yes" if "Varo" in messages[-1].content.split("Predicted answer:")[1] else "no"

    j = rewards.judge(ScriptedChatModel(script=script))
    assert j(traj("the town of Varo, by the sea", []), GOLD) == 1.0
    assert j(traj("Oslo", []), GOLD) == 0.0
    assert "Gold answer: Varo / Varo City" in seen[0]


def test_rescore_stored_trajectories_without_running_them(tmp_path, small_world):
    from tools.embeddings import HashEmbedder
    from tools.knowledge import KnowledgeBase

    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    store = TrajectoryStore(tmp_path / "runs", reward=rewards.default())
    model = ScriptedChatModel()
    research_many(small_world.tasks[:3], samples_per_task=2, store=store, model=model,
                  knowledge=kb, config=ResearchConfig(search_mode="fts"))
    calls = dict(model.calls)
    recorded = [t.metrics["reward"] for t in store]  # scored at record time
    assert recorded == [rewards.default()(t) for t in store]
    heavier = rewards.Reward({"f1": (rewards.f1, 2.0), "recall": (rewards.evidence_recall, 1.0)})
    assert store.rescore(heavier) == 6  # new weights, new components, gold from the store
    assert model.calls == calls
    again = training.data.score(store.query("reward >= -100"))  # rewards as the index holds them
    assert len(again) == 6 and any(s["recall"] > 0 for _, _, s in again)
    assert all(r == pytest.approx(2 * s["f1"] + s["recall"]) for _, r, s in again)
    tasks = {t["id"]: t for t in small_world.tasks}
    by_task = training.data.score(store, rewards.as_reward(rewards.evidence_recall), tasks)
    assert [r for _, r, _ in by_task] == [rewards.evidence_recall(t) for t in store]


def test_group_advantages_on_a_hand_made_group():
    assert group_advantages([1.0, 0.0, 0.5, 0.5]) == pytest.approx([1.4142, -1.4142, 0, 0], abs=1e-3)
    assert group_advantages([3.0]) == [0.0]
    group = [traj("Varo", [ModelStep(role="planner", prompt_token_ids=[1], completion_token_ids=[2],
                                     logprobs=[-0.1]),
                           ModelStep(role="writer", prompt_token_ids=[1, 2], completion_token_ids=[3],
                                     logprobs=[-0.2])], group_id="g"),
             traj("Oslo", [ModelStep(role="writer", prompt_token_ids=[4], completion_token_ids=[5],
                                     logprobs=[-0.3])], group_id="g")]
    samples = build_samples(group, rewards.exact_match, tasks={"t1": TASK})
    assert [(s.role, round(s.advantage, 4)) for s in samples] == [
        ("planner", 1.0), ("writer", 1.0), ("writer", -1.0)]
    per_role = build_samples(group, rewards.exact_match, tasks={"t1": TASK}, per_role=True)
    # only one trajectory made a planner call: its planner group has no baseline spread
    assert [(s.role, round(s.advantage, 3)) for s in per_role] == [("planner", 0.0), ("writer", 1.0),
                                                                   ("writer", -1.0)]
    kept = build_samples(group, rewards.exact_match, tasks={"t1": TASK}, min_reward=0.5,
                         roles=["writer"])
    assert [(s.role, s.reward, round(s.advantage, 4)) for s in kept] == [("writer", 1.0, 1.0)]


def test_tool_output_in_a_later_prompt_carries_no_trainable_token(tiny_model, small_world, tmp_path):
    """Run the real graph with a real (tiny) LocalChatModel; the writer's prompt holds the
    retrieved passages, and none of their tokens may be trainable."""
    from tools.embeddings import HashEmbedder
    from tools.knowledge import KnowledgeBase

    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    store = TrajectoryStore(tmp_path / "runs")
    research_many(small_world.tasks[:1], samples_per_task=2, store=store, model=tiny_model,
                  knowledge=kb, config=ResearchConfig(search_mode="fts", max_rounds=1))
    trajectories = list(store)
    samples = build_samples(trajectories, rewards.f1)
    assert samples and {s.role for s in samples} >= {"planner", "writer"}
    ds = to_dataset(samples)
    assert len(ds) == len(samples)
    tok = tiny_model.tokenizer
    writer = next(i for i, s in enumerate(samples) if s.role == "writer")
    row = ds[writer]
    passage = next(h["text"] for t in trajectories for s in t.tool_steps for h in s.output)
    ids, mask = row["input_ids"], row["completion_mask"]
    frozen = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    trainable = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert passage[:40] in frozen and passage[:40] not in trainable
    for s, r in zip(samples, ds, strict=True):
        assert sum(r["completion_mask"]) == len(s.completion_ids) == len(r["old_logprobs"])
        assert r["completion_mask"] == loss_mask(s)
        assert all(lab == -100 for lab, m in zip(r["labels"], r["completion_mask"], strict=True) if not m)


def test_the_grounded_mix_pays_a_right_answer_only_for_the_evidence_behind_it():
    mix = rewards.mix("grounded")
    guessed = traj("Varo", [])  # right, nothing searched: a comparison's coin flip
    half = traj("Varo", [search("g1")])
    full = traj("Varo", [search("g1", "g2")])
    assert mix.scores(guessed, GOLD)["grounded_exact_match"] == 0.0
    assert mix.scores(half, GOLD)["grounded_f1"] == pytest.approx(0.5)
    assert mix(guessed, GOLD) < mix(half, GOLD) < mix(full, GOLD)
    # under the default mix the guess earns the full correctness reward
    assert rewards.default()(guessed, GOLD) - mix(guessed, GOLD) == pytest.approx(1.5)
    # a wrong run earns the same under both; so does a right one that read all the gold
    wrong = traj("Oslo", [search("g1", "g2")])
    assert mix(wrong, GOLD) == pytest.approx(rewards.default()(wrong, GOLD))
    assert mix(full, GOLD) == pytest.approx(rewards.default()(full, GOLD))
    # without gold documents (a task file without gold flags) correctness is paid as it is
    no_docs = Gold(answer="Varo")
    assert mix(guessed, no_docs) == pytest.approx(rewards.default()(guessed, no_docs))
    assert set(mix.weights) - set(rewards.default().weights) == {"grounded_f1", "grounded_exact_match"}
    with pytest.raises(ValueError, match="unknown reward mix 'strict': the mixes are default, grounded"):
        rewards.mix("strict")
