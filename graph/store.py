"""`TrajectoryStore`: an append-only JSONL of trajectories plus a LanceDB table to query them.

The JSONL file is the truth: one trajectory a line, written under an exclusive file lock in
one `write`, flushed and fsynced before `append` returns. A process killed mid-write can
leave at most one partial last line, which readers skip and the next writer fences off with
a newline, so every finished trajectory stays readable and none is half-read. The LanceDB
table (`index.lance`) holds one summary row per trajectory (task, group, model, reward,
byte offset) for filtering; `reindex()` rebuilds it from the JSONL.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from graph.trajectory import Trajectory

_INDEX_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("task_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("model", pa.string()),
    pa.field("question", pa.string()), pa.field("answer", pa.string()),
    pa.field("reward", pa.float64()), pa.field("n_steps", pa.int32()),
    pa.field("n_model_calls", pa.int32()), pa.field("created_at", pa.float64()),
    pa.field("offset", pa.int64()),
])


def _row(t: Trajectory, offset: int) -> dict[str, Any]:
    reward = t.metrics.get("reward")
    return {"id": t.id, "task_id": t.task_id or "", "group_id": t.group_id or "",
            "model": t.model, "question": t.question, "answer": t.answer,
            "reward": float(reward) if isinstance(reward, int | float) else None,
            "n_steps": len(t.steps), "n_model_calls": len(t.model_steps),
            "created_at": t.created_at, "offset": offset}


class TrajectoryStore:
    """A folder of recorded trajectories: `append`, iterate, `get`, `query`, `groups`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.file = self.path / "trajectories.jsonl"
        self._lock = threading.Lock()
        self._table: Any = None

    # ------------------------------------------------------------------ writing

    def append(self, trajectory: Trajectory) -> int:
        """Write one trajectory durably; return its byte offset in the JSONL file."""
        line = (trajectory.model_dump_json() + "\n").encode()
        with self._lock:
            fd = os.open(self.file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":  # fence off a torn last line
                    line = b"\n" + line
                    end += 1
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as e:
                    raise OSError(e.errno, f"cannot record trajectory {trajectory.id} in "
                                           f"{self.file}: {e.strerror}") from None
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            self._index([_row(trajectory, end)])
        return end

    def _open_index(self, create: bool) -> Any:
        if self._table is None:
            import lancedb

            db = lancedb.connect(str(self.path / "index.lance"))
            if "trajectories" in db.list_tables().tables:
                self._table = db.open_table("trajectories")
            elif create:
                self._table = db.create_table("trajectories", schema=_INDEX_SCHEMA,
                                              exist_ok=True)
        else:
            self._table.checkout_latest()
        return self._table

    def _index(self, rows: list[dict[str, Any]]) -> None:
        self._open_index(create=True).add(rows)

    def reindex(self) -> int:
        """Rebuild the LanceDB table from the JSONL file; return the number of rows."""
        import lancedb

        rows = [_row(t, off) for off, t in self._scan()]
        db = lancedb.connect(str(self.path / "index.lance"))
        self._table = db.create_table("trajectories", schema=_INDEX_SCHEMA, mode="overwrite")
        if rows:
            self._table.add(rows)
        return len(rows)

    # ------------------------------------------------------------------ reading

    def _scan(self) -> Iterator[tuple[int, Trajectory]]:
        if not self.file.exists():
            return
        offset = 0
        with self.file.open("rb") as fh:
            for raw in fh:
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n") or not raw.strip():
                    continue  # a torn last line (a writer was killed) or a fence
                try:
                    yield start, Trajectory.model_validate_json(raw)
                except ValueError:
                    continue

    def __iter__(self) -> Iterator[Trajectory]:
        return (t for _, t in self._scan())

    def __len__(self) -> int:
        return sum(1 for _ in self._scan())

    def _read_at(self, offset: int) -> Trajectory:
        with self.file.open("rb") as fh:
            fh.seek(offset)
            return Trajectory.model_validate_json(fh.readline())

    def query(self, where: str | Callable[[Trajectory], bool] | None = None) -> list[Trajectory]:
        """Trajectories matching a SQL filter on the index (`"reward >= 0.5 AND model = 'x'"`)
        or a Python predicate, in the order they were written."""
        if where is None or callable(where):
            return [t for t in self if where is None or where(t)]
        table = self._open_index(create=False)
        if table is None:
            return []
        rows = table.search().where(where).select(["offset"]).limit(1 << 30).to_arrow()
        return [self._read_at(o) for o in sorted(rows["offset"].to_pylist())]

    def get(self, trajectory_id: str) -> Trajectory:
        """One trajectory by id (KeyError if absent)."""
        found = self.query(f"id = '{trajectory_id.replace(chr(39), '')}'")
        if not found:
            raise KeyError(trajectory_id)
        return found[0]

    def groups(self) -> dict[str, list[Trajectory]]:
        """Trajectories by `group_id` (the samples of one task)."""
        out: dict[str, list[Trajectory]] = {}
        for t in self:
            out.setdefault(t.group_id or t.id, []).append(t)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for a quick look."""
        trajs = list(self)
        return {"trajectories": len(trajs), "groups": len({t.group_id for t in trajs}),
                "tasks": len({t.task_id for t in trajs}),
                "models": sorted({t.model for t in trajs}),
                "path": str(self.path)}

