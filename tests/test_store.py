"""The trajectory store: durable, concurrent, and readable after a writer is killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest

from graph.store import TrajectoryStore
from graph.trajectory import ModelStep, ToolStep, Trajectory


def make(i: int, group: str = "g", reward: float | None = None) -> Trajectory:
    steps = [ModelStep(role="planner", node="plan", prompt_token_ids=[1, 2], completion_token_ids=[3],
                       logprobs=[-0.5], text="<done>", started_at=1.0),
             ToolStep(tool="knowledge_base", input={"query": "q"}, output=[{"doc_id": "d"}], started_at=2.0)]
    return Trajectory(task_id=f"t{i % 3}", group_id=group, question=f"q{i}", answer=f"a{i}",
                      model="m", steps=steps, metrics={} if reward is None else {"reward": reward})


def test_append_read_query_round_trip(tmp_path):
    store = TrajectoryStore(tmp_path)
    for i in range(6):
        store.append(make(i, group=f"g{i % 2}", reward=i / 5))
    assert len(store) == 6
    first = next(iter(store))
    assert isinstance(first.steps[0], ModelStep) and isinstance(first.steps[1], ToolStep)
    assert [t.answer for t in store.query("reward >= 0.6")] == ["a3", "a4", "a5"]
    assert [t.answer for t in store.query("task_id = 't0' AND group_id = 'g1'")] == ["a3"]
    assert [t.answer for t in store.query(lambda t: t.answer.endswith("2"))] == ["a2"]
    assert store.get(first.id).question == "q0"
    with pytest.raises(KeyError):
        store.get("nope")
    assert {k: len(v) for k, v in store.groups().items()} == {"g0": 3, "g1": 3}
    (tmp_path / "index.lance").rename(tmp_path / "lost.lance")
    assert TrajectoryStore(tmp_path).reindex() == 6  # the JSONL is the truth


def _writer(path: str, start: int) -> None:
    store = TrajectoryStore(path)
    for i in range(start, start + 8):
        store.append(make(i))


def test_concurrent_writers(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 100)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = TrajectoryStore(tmp_path)
    assert len(store) == 32 and len({t.id for t in store}) == 32
    assert len(store.query("model = 'm'")) == 32


def _killed_mid_write(path: str) -> None:
    store = TrajectoryStore(path)
    for i in range(3):
        store.append(make(i))
    fd = os.open(store.file, os.O_WRONLY | os.O_APPEND)
    os.write(fd, make(99).model_dump_json().encode()[:150])  # half a line, then killed
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_writer_leaves_finished_trajectories_readable(tmp_path):
    p = mp.get_context("spawn").Process(target=_killed_mid_write, args=(str(tmp_path),))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    store = TrajectoryStore(tmp_path)
    assert [t.question for t in store] == ["q0", "q1", "q2"]
    store.append(make(7))  # the torn line is fenced off, not glued to
    assert [t.question for t in store] == ["q0", "q1", "q2", "q7"]
    assert store.get(store.query(lambda t: t.question == "q7")[0].id).answer == "a7"
