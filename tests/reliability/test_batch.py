"""`research_many` in batches: a bad task is one error result, and 32 runs at once all finish.

The scripted chat model (tests/scripted.py) stands in for the policy over a real LanceDB
knowledge base of a generated world (hash embeddings: no model weights anywhere).
"""

from __future__ import annotations

import time

import pytest
from scripted import ScriptedChatModel

from graph import ResearchConfig, TrajectoryStore, research_many

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def kb(hashed_world_kb):
    return hashed_world_kb


def test_a_task_without_a_question_is_an_error_result_the_others_run(kb, small_world, tmp_path):
    good = small_world.tasks[:3]
    tasks = [good[0], {"id": "no-question", "answer": "x"}, good[1], 42, good[2]]
    store = TrajectoryStore(tmp_path / "runs")
    results = research_many(tasks, samples_per_task=2, concurrency=4, store=store,
                            model=ScriptedChatModel(), knowledge=kb,
                            config=ResearchConfig(search_mode="fts", seed=1))
    assert len(results) == 10  # task order, two samples each
    assert [r.task_id for r in results[::2]] == [good[0]["id"], "no-question", good[1]["id"], "q3",
                                                 good[2]["id"]]
    bad = results[2:4] + results[6:8]
    assert all(r.error and r.trajectory is None and r.answer == "" for r in bad)
    assert all("no 'question' field" in r.error for r in results[2:4])
    assert all("not a question or a task dict" in r.error for r in results[6:8])
    ok = results[:2] + results[4:6] + results[8:]
    assert all(r.error is None and r.answer and r.trajectory is not None for r in ok)
    assert len(store) == 6 and {r.trajectory_id for r in ok} == {t.id for t in store}


def test_32_concurrent_runs_all_finish(kb, small_world, tmp_path):
    """32 runs at once (16 tasks x 2 samples, concurrency 32) over one knowledge base and one
    trajectory store: every run ends with an answer and a stored trajectory, in bounded time."""
    tasks = small_world.tasks[:16]
    model = ScriptedChatModel()
    store = TrajectoryStore(tmp_path / "runs")
    done: list[str] = []
    t0 = time.perf_counter()
    results = research_many(tasks, samples_per_task=2, concurrency=32, store=store, model=model,
                            knowledge=kb, config=ResearchConfig(search_mode="hybrid", seed=3),
                            on_result=lambda r: done.append(r.task_id or ""))
    seconds = time.perf_counter() - t0
    assert len(results) == len(done) == 32
    assert [r.error for r in results if r.error] == []
    assert all(r.answer and r.stop_reason and r.trajectory_id for r in results)
    assert len(store) == 32 and len(store.groups()) == 16
    assert model.calls["writer"] == 32
    assert seconds < 120, f"32 concurrent scripted runs took {seconds:.0f} s"


def test_a_bug_in_a_custom_role_fails_that_run_only(kb, small_world):
    """A role that raises something unforeseen (a KeyError here) on one task costs that run,
    recorded with the error's type, and not the batch."""
    from agents import Writer

    tasks = small_world.tasks[:3]
    model = ScriptedChatModel()
    writer = Writer(model)

    def flaky_writer(state):
        if state["question"] == tasks[1]["question"]:
            raise KeyError("a bug in a custom writer")
        return writer(state)

    results = research_many(tasks, concurrency=3, model=model, knowledge=kb, writer=flaky_writer,
                            config=ResearchConfig(search_mode="fts", seed=1))
    assert results[1].error.startswith("KeyError") and results[1].trajectory is None
    assert all(r.error is None and r.answer for r in (results[0], results[2]))
