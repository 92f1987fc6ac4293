"""`kill -9` of concurrent writers of one `TrajectoryStore`, then reopen.

Several writer processes append at once (some lines large enough that a kill can land inside
the write); each is SIGKILLed at a random moment, over several rounds. Afterwards every
trajectory whose `append` returned is readable exactly once, no line is unreadable, and the
LanceDB index, repaired on reopening, holds exactly one row per readable line, at its offset.
(`tests/test_store.py` kills one writer at a time; this adds concurrency and the index check.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graph.store import TrajectoryStore
from graph.trajectory import ModelStep, Trajectory

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ROUNDS, WRITERS = 3, 3

# One helper process imports the store (and LanceDB, seconds of import) once, opening nothing,
# then forks a fresh writer process per request: the writers are real separate processes that
# each open the store, but a kill costs no re-import.
FORKER = r"""
import os, random, sys, warnings
import lancedb  # imported before any fork; no connection is opened in this process
# lancedb resets its runtime in a forked child and warns that state mid-operation at fork time
# could deadlock it; this process never operates on LanceDB, so nothing is mid-operation
warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
from graph.store import TrajectoryStore
from graph.trajectory import ModelStep, Trajectory

def write(path, done, seed):
    rng = random.Random(seed)
    store = TrajectoryStore(path)
    fd = os.open(done, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for i in range(100_000):
        big = "x" * rng.choice([10, 1_000, 1_000_000])  # large lines: a kill can land mid-write
        t = Trajectory(task_id=f"w{seed}", question=f"q{seed}-{i}", answer=big[:5], model="m",
                       steps=[ModelStep(role="writer", text=big, completion_token_ids=[1, 2])])
        store.append(t)
        os.write(fd, (t.id + "\n").encode())  # finished: append returned

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "spawn":
        pid = os.fork()
        if pid == 0:
            try:
                write(args[0], args[1], int(args[2]))
            finally:
                os._exit(3)
        print(pid, flush=True)
    elif cmd == "reap":
        _, status = os.waitpid(int(args[0]), 0)
        print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status), flush=True)
"""


class Forker:
    """The helper process: `spawn` a writer (its pid), `reap` one (the signal that ended it)."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", FORKER], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, *words: str) -> int:
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def _finished(done: Path) -> list[str]:
    return done.read_text().split() if done.exists() else []


def _index_rows(store: TrajectoryStore) -> list[tuple[int, str]]:
    table = store._sync()
    rows = table.search().select(["offset", "id"]).limit(1 << 30).to_arrow().to_pylist()
    return sorted((r["offset"], r["id"]) for r in rows)


def test_concurrent_writers_killed_lose_nothing_and_the_index_agrees(tmp_path):
    rng = random.Random(14)
    store_dir, kills, finished = tmp_path / "runs", 0, []
    forker = Forker()
    try:
        for r in range(ROUNDS):
            dones = [tmp_path / f"done-{r}-{w}.txt" for w in range(WRITERS)]
            pids = [forker.ask("spawn", str(store_dir), str(d), str(10 * r + w))
                    for w, d in enumerate(dones)]
            need = [rng.randint(1, 4) for _ in pids]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                    len(_finished(d)) < n for d, n in zip(dones, need, strict=True)):
                time.sleep(0.002)
            for pid in rng.sample(pids, len(pids)):  # kill -9, in random order, at random moments
                time.sleep(rng.uniform(0, 0.02))
                os.kill(pid, signal.SIGKILL)
            for pid in pids:
                assert forker.ask("reap", str(pid)) == signal.SIGKILL  # died by the kill, not before
                kills += 1
            finished += [i for d in dones for i in _finished(d)]
    finally:
        forker.close()

    store = TrajectoryStore(store_dir)  # reopen
    lines = [(off, t.id) for off, t in store._scan()]
    ids = [i for _, i in lines]
    print(f"\nkills: {kills}; finished appends: {len(finished)}; lines readable: {len(lines)}; "
          f"torn (fenced) lines: {len(store.torn)}")
    assert kills == ROUNDS * WRITERS and len(finished) >= ROUNDS * WRITERS
    assert len(ids) == len(set(ids))  # no trajectory twice
    assert set(finished) <= set(ids)  # every finished trajectory readable
    assert store.unreadable == []  # torn lines only, no garbage
    assert _index_rows(store) == sorted(lines)  # one row per line, at its offset
    assert [t.id for t in store.query("model = 'm'")] == ids

    extra = Trajectory(question="after", model="m", steps=[ModelStep(text="ok")])
    store.append(extra)  # a later writer fences off any torn tail and is indexed
    fresh = TrajectoryStore(store_dir)
    assert fresh.get(extra.id).question == "after"
    assert _index_rows(fresh) == sorted((off, t.id) for off, t in fresh._scan())
