"""The trajectory store: durable, concurrent, and readable after a writer is killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import warnings

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


# ---------------------------------------------------------------- rewards


class TinyScorer:
    """A tiny scorer: `em` against the gold answer, `short` for answers under 3 characters."""

    def __init__(self, weight: float = 1.0, fail_on: tuple[str, ...] = ()):
        self.weight, self.fail_on, self.golds = weight, fail_on, []

    def scores(self, trajectory: Trajectory, gold=None) -> dict[str, float]:
        self.golds.append(gold)
        if trajectory.question in self.fail_on:
            raise ValueError(f"cannot score {trajectory.question}")
        answer = gold.get("answer") if isinstance(gold, dict) else getattr(gold, "answer", None)
        em, short = float(trajectory.answer == answer), float(len(trajectory.answer) < 3)
        return {"em": em, "short": short, "reward": self.weight * em + 0.1 * short}


def scored(i: int, gold: str) -> Trajectory:
    t = make(i)
    return t.model_copy(update={"gold": Trajectory(gold={"answer": gold}).gold})


def test_reward_scored_at_record_time_without_touching_the_callers_object(tmp_path):
    scorer = TinyScorer()
    store = TrajectoryStore(tmp_path, reward=scorer)
    trajs = [scored(1, "a1"), scored(2, "wrong"), scored(30, "a30")]
    for t in trajs:
        store.append(t)
    assert all(t.metrics == {} for t in trajs)  # the caller's objects are not modified
    assert [g for g in scorer.golds] == [t.gold for t in trajs] and scorer.golds[0] is trajs[0].gold
    written = list(store)  # the JSONL carries the rewards
    assert [t.metrics["reward"] for t in written] == [1.1, 0.1, 1.0]
    assert written[2].metrics["reward_components"] == {"em": 1.0, "short": 0.0}
    assert [t.answer for t in store.query("reward >= 0.5 AND model = 'm'")] == ["a1", "a30"]
    assert store.get(trajs[1].id).metrics["reward_components"] == {"em": 0.0, "short": 1.0}
    assert [t.answer for t in TrajectoryStore(tmp_path).query("reward < 0.5")] == ["a2"]


def test_a_failing_scorer_never_loses_the_trajectory(tmp_path):
    store = TrajectoryStore(tmp_path, reward=TinyScorer(fail_on=("q2",)))
    for i in range(1, 4):
        store.append(scored(i, f"a{i}"))
    assert [t.question for t in store] == ["q1", "q2", "q3"]
    failed = store.get(next(t.id for t in store if t.question == "q2"))
    assert "reward" not in failed.metrics
    assert failed.metrics["reward_error"] == "ValueError: cannot score q2"
    assert [t.question for t in store.query("reward IS NULL")] == ["q2"]
    assert [t.question for t in store.query("reward >= 1")] == ["q1", "q3"]


def test_rescore_rewrites_the_index_not_the_jsonl(tmp_path):
    store = TrajectoryStore(tmp_path, reward=TinyScorer())
    for i in range(4):
        store.append(scored(i, "a0" if i < 2 else f"a{i}"))  # em: 1, 0, 1, 1
    before = store.file.read_bytes()
    with pytest.warns(RuntimeWarning, match="cannot score q3"):
        assert store.rescore(TinyScorer(weight=5.0, fail_on=("q3",))) == 3
    assert store.file.read_bytes() == before
    assert [t.question for t in store.query("reward >= 5")] == ["q0", "q2"]
    assert [t.question for t in store.query("reward IS NULL")] == ["q3"]
    assert store.get(store.query("reward >= 5")[0].id).metrics["reward"] == 5.1
    assert [t.metrics.get("reward") for t in store.query(lambda t: True)] == [5.1, 0.1, 5.1, None]
    assert [t.metrics["reward"] for t in store] == [1.1, 0.1, 1.1, 1.1]  # iteration: as written
    fresh = TrajectoryStore(tmp_path)
    assert [t.question for t in fresh.query("reward >= 5")] == ["q0", "q2"]
    assert fresh.reindex() == 4 and [t.question for t in fresh.query("reward >= 5")] == ["q0", "q2"]
    assert fresh.reindex(keep_rewards=False) == 4
    assert [t.question for t in fresh.query("reward >= 1")] == ["q0", "q2", "q3"]


def test_rescore_counts_and_warns_about_failures(tmp_path):
    store = TrajectoryStore(tmp_path)
    for i in range(3):
        store.append(scored(i, f"a{i}"))
    assert store.query("reward IS NOT NULL") == []
    with pytest.warns(RuntimeWarning, match="1 trajectories could not be scored.*cannot score q1"):
        assert store.rescore(TinyScorer(fail_on=("q1",))) == 2
    assert [t.question for t in store.query("reward >= 1")] == ["q0", "q2"]
    assert store.query("reward >= 1")[0].metrics["reward_components"] == {"em": 1.0, "short": 1.0}


# ---------------------------------------------------------------- the index lags the JSONL


def write_line_only(store: TrajectoryStore, t: Trajectory) -> None:
    """What a writer killed between its fsynced line and its index row leaves."""
    with store.file.open("ab") as fh:
        fh.write((t.model_dump_json() + "\n").encode())


def test_a_lagging_index_is_repaired_on_open_keeping_its_rewards(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(make(0, reward=0.2))
    store.rescore(TinyScorer(weight=3.0))  # q0 answers a0 but has no gold: em 0, short 1 -> 0.1
    assert store.get(next(iter(store)).id).metrics["reward"] == 0.1
    write_line_only(store, make(1, reward=0.9))  # lag in the middle of the file ...
    store.append(make(2, reward=0.3))
    write_line_only(store, make(3, reward=0.8))  # ... and at its end
    fresh = TrajectoryStore(tmp_path)
    assert [t.question for t in fresh.query("model = 'm'")] == ["q0", "q1", "q2", "q3"]
    assert [t.metrics["reward"] for t in fresh.query("model = 'm'")] == [0.1, 0.9, 0.3, 0.8]
    assert [t.question for t in fresh.query("reward >= 0.5")] == ["q1", "q3"]
    assert fresh._open_index(create=False).count_rows() == 4  # repaired once, not again
    write_line_only(store, make(4))
    assert [t.question for t in fresh.query("task_id = 't1'")] == ["q1", "q4"]  # a live reader too
    assert fresh._open_index(create=False).count_rows() == 5
    assert [t.question for t in store.query("task_id = 't1'")] == ["q1", "q4"]


def test_an_index_that_was_never_created_is_built_on_first_query(tmp_path):
    store = TrajectoryStore(tmp_path)
    for i in range(3):
        write_line_only(store, make(i))
    assert not (tmp_path / "index.lance").exists() or store._open_index(create=False) is None
    assert [t.question for t in TrajectoryStore(tmp_path).query("group_id = 'g'")] == ["q0", "q1", "q2"]


def _killed_before_indexing(path: str) -> None:
    store = TrajectoryStore(path)
    for i in range(3):
        store.append(make(i))
    # die exactly between the fsynced line and the index row, as `kill -9` can
    TrajectoryStore._add_row = lambda self, row: os.kill(os.getpid(), signal.SIGKILL)
    store.append(make(3))


def test_writer_killed_between_line_and_row(tmp_path):
    p = mp.get_context("spawn").Process(target=_killed_before_indexing, args=(str(tmp_path),))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    assert [t.question for t in TrajectoryStore(tmp_path)] == ["q0", "q1", "q2", "q3"]
    import lancedb
    assert lancedb.connect(str(tmp_path / "index.lance")).open_table("trajectories").count_rows() == 3
    TrajectoryStore(tmp_path).append(make(4))  # a later writer; the gap stays in the middle
    found = TrajectoryStore(tmp_path).query("model = 'm'")
    assert [t.question for t in found] == ["q0", "q1", "q2", "q3", "q4"]


def _append_forever(path: str, done: str) -> None:
    store = TrajectoryStore(path)
    fd = os.open(done, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for i in range(10_000):
        t = make(i)
        store.append(t)
        os.write(fd, (t.id + "\n").encode())  # finished: append returned


def test_writers_killed_mid_stream_lose_no_finished_trajectory(tmp_path):
    done = tmp_path / "done.txt"
    ctx = mp.get_context("spawn")
    for _round in range(3):
        p = ctx.Process(target=_append_forever, args=(str(tmp_path), str(done)))
        p.start()
        deadline = time.monotonic() + 60
        while (not done.exists() or done.read_text().count("\n") < 5 * (_round + 1)) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.05))
        os.kill(p.pid, signal.SIGKILL)
        p.join(60)
        assert p.exitcode == -signal.SIGKILL
    finished = done.read_text().split()
    store = TrajectoryStore(tmp_path)
    found = [t.id for t in store.query("model = 'm'")]
    assert len(found) == len(set(found)) == len(list(store))  # each readable line exactly once
    assert set(finished) <= set(found) and len(finished) >= 15
    assert store.unreadable == []


# ---------------------------------------------------------------- unreadable lines, quotes


def test_unreadable_lines_are_counted_and_warned_torn_ones_are_not(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(make(0))
    bad_at = store.file.stat().st_size
    with store.file.open("ab") as fh:
        fh.write(b'{"steps": 5}\n')  # e.g. an older schema
        fh.write(make(9).model_dump_json().encode()[:120])  # a writer killed mid-line
    torn_at = bad_at + len(b'{"steps": 5}\n')
    store.append(make(1))  # fences the torn line off
    with store.file.open("ab") as fh:
        fh.write(make(8).model_dump_json().encode()[:80])  # a torn last line: a write in flight
    with pytest.warns(RuntimeWarning, match=r"1 line\(s\) .* could not be read .*byte \d+: .*steps"):
        assert [t.question for t in store] == ["q0", "q1"]
    assert [o for o, _ in store.unreadable] == [bad_at] and "steps" in store.unreadable[0][1]
    assert store.torn == [torn_at]
    with pytest.warns(RuntimeWarning):
        summary = store.summary()
    assert (summary["trajectories"], summary["unreadable"], summary["torn"]) == (2, 1, 1)
    with pytest.warns(RuntimeWarning):
        assert [t.question for t in TrajectoryStore(tmp_path).query("model = 'm'")] == ["q0", "q1"]


def test_torn_lines_alone_raise_no_warning(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(make(0))
    with store.file.open("ab") as fh:
        fh.write(make(9).model_dump_json().encode()[:2])
    store.append(make(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store) == 2 and store.unreadable == [] and len(store.torn) == 1
        assert len(TrajectoryStore(tmp_path).query("model = 'm'")) == 2


def test_get_escapes_quotes(tmp_path):
    store = TrajectoryStore(tmp_path)
    ids = ["it's", "a''b", "x' OR '1'='1"]
    for i, tid in enumerate(ids):
        store.append(make(i).model_copy(update={"id": tid}))
    assert [store.get(tid).question for tid in ids] == ["q0", "q1", "q2"]
    with pytest.raises(KeyError):
        store.get("nope' OR '1'='1")  # unescaped, this filter would match every row


def test_an_index_of_the_older_layout_is_rebuilt_keeping_its_rewards(tmp_path):
    import lancedb
    import pyarrow as pa

    store = TrajectoryStore(tmp_path)
    offsets = [store.append(make(i)) for i in range(3)]
    old = pa.schema([f for f in store._open_index(create=False).schema if f.name != "components"])
    rows = [{"id": t.id, "task_id": t.task_id, "group_id": t.group_id, "model": t.model,
             "question": t.question, "answer": t.answer, "reward": 0.25 * i, "n_steps": 2,
             "n_model_calls": 1, "created_at": t.created_at, "offset": o}
            for i, (t, o) in enumerate(zip(store, offsets, strict=True))]
    lancedb.connect(str(tmp_path / "index.lance")).create_table(
        "trajectories", pa.Table.from_pylist(rows, old), mode="overwrite")
    fresh = TrajectoryStore(tmp_path)
    fresh.append(make(3, reward=0.9))  # an old-layout index must not stop a writer
    assert [t.question for t in fresh.query("reward >= 0.5")] == ["q2", "q3"]
    assert "components" in fresh._open_index(create=False).schema.names
