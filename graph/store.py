"""`TrajectoryStore`: an append-only JSONL of trajectories plus a LanceDB table to query them.

The JSONL file is the truth: one trajectory a line, written under an exclusive file lock in
one `write`, flushed and fsynced before `append` returns. A process killed mid-write can
leave at most one partial last line, which readers skip and the next writer fences off with
a newline, so every finished trajectory stays readable and none is half-read. Text that UTF-8
cannot encode (a lone surrogate) is written as U+FFFD (`Trajectory.storable`), never refused.

The LanceDB table (`index.lance`) holds one summary row per trajectory (task, group, model,
answer, reward, reward components, byte offset) for filtering. A writer adds its row under
the same file lock as its line, so under that lock every complete line either has its row or
was written by a writer that died before adding it. Such lag is repaired lazily, on the
first read that uses the index (and again after the file grew): the offsets of the complete
lines are compared with the offsets in the index and the missing lines are indexed.
`reindex()` rebuilds the table from the JSONL.

Rewards: `TrajectoryStore(path, reward=scorer)` scores each trajectory before writing it
(`metrics["reward"]`, `metrics["reward_components"]`); `rescore(scorer)` re-scores every
stored trajectory into the index only (the JSONL is never rewritten). `query` and `get`
return trajectories with the index's reward in `metrics`; iterating the store reads the
JSONL as written.

Lines that cannot be read: a complete line that is a truncated JSON object is `torn` (a
writer killed mid-line whose line the next writer fenced off: expected crash residue); any
other complete line that fails to parse or validate is `unreadable` (e.g. a schema change),
is counted and warned about, never silently dropped. Blank fence lines and a torn last line
without its newline (a write still in progress, or killed) are neither.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pydantic_core
from pydantic import ValidationError

from graph.trajectory import Trajectory

_ALL = 1 << 30  # "no limit" for LanceDB queries
_INDEX_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("task_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("model", pa.string()),
    pa.field("question", pa.string()), pa.field("answer", pa.string()),
    pa.field("reward", pa.float64()), pa.field("components", pa.string()),
    pa.field("n_steps", pa.int32()), pa.field("n_model_calls", pa.int32()),
    pa.field("created_at", pa.float64()), pa.field("offset", pa.int64()),
])


class Scorer(Protocol):
    """Anything that scores a trajectory: components plus their total under "reward"
    (`training.rewards.Reward` is one; the store never imports training)."""

    def scores(self, trajectory: Trajectory, gold: Any = None, /) -> dict[str, float]: ...


def _score(scorer: Scorer, t: Trajectory) -> tuple[float, dict[str, float]]:
    """(total, components) of one trajectory; raises whatever the scorer raises."""
    scores = {k: float(v) for k, v in scorer.scores(t, t.gold).items()}
    if "reward" not in scores:
        raise KeyError(f"the scorer returned no 'reward' (got {sorted(scores)})")
    total = scores.pop("reward")
    return total, scores


def _error(e: BaseException) -> str:
    """A one-line reason: the first validation error, or the exception's message."""
    if isinstance(e, ValidationError) and e.errors():
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "trajectory"
        return f"{e.error_count()} validation error(s), first: {where}: {first['msg']}"
    return f"{type(e).__name__}: {e}"


def _reward_of(t: Trajectory) -> tuple[float | None, str | None]:
    """The reward and components (JSON) a trajectory carries in its metrics, for the index."""
    reward, comps = t.metrics.get("reward"), t.metrics.get("reward_components")
    ok = isinstance(reward, int | float) and not isinstance(reward, bool)
    return (float(reward) if ok else None,
            json.dumps(comps, sort_keys=True) if ok and isinstance(comps, dict) else None)


def _row(t: Trajectory, offset: int, reward: tuple[float | None, str | None] | None = None
         ) -> dict[str, Any]:
    total, comps = _reward_of(t) if reward is None else reward
    return {"id": t.id, "task_id": t.task_id or "", "group_id": t.group_id or "",
            "model": t.model, "question": t.question, "answer": t.answer,
            "reward": total, "components": comps,
            "n_steps": len(t.steps), "n_model_calls": len(t.model_steps),
            "created_at": t.created_at, "offset": offset}


def _with_reward(t: Trajectory, reward: float | None, comps: str | None) -> Trajectory:
    """A copy of `t` whose metrics carry the index's reward and components."""
    metrics = {k: v for k, v in t.metrics.items() if k not in ("reward", "reward_components")}
    if reward is not None:
        metrics["reward"] = reward
        if comps:
            metrics["reward_components"] = json.loads(comps)
    return t.model_copy(update={"metrics": metrics})


def _is_torn(raw: bytes) -> bool:
    """Whether a complete line that failed to parse is a proper prefix of a JSON object (what a
    writer killed mid-line leaves, once the next writer fences it off with a newline)."""
    body = raw.rstrip(b"\n")
    if not body.startswith(b"{"):
        return False
    try:
        pydantic_core.from_json(body)
    except ValueError as e:  # the parser read valid JSON up to the end of the line, then ran out
        return str(e).startswith("EOF while parsing")
    return False


def _parse(raw: bytes) -> tuple[Trajectory | None, str | None]:
    """(trajectory, None) for a readable line, (None, None) for a torn one, else (None, why)."""
    try:
        return Trajectory.model_validate_json(raw), None
    except ValueError as e:
        return None, None if _is_torn(raw) else _error(e)


def _warn_unreadable(file: Path, unreadable: list[tuple[int, str]]) -> None:
    off, why = unreadable[0]
    warnings.warn(f"{len(unreadable)} line(s) of {file} could not be read and are skipped "
                  f"(first at byte {off}: {why}); see TrajectoryStore.unreadable",
                  RuntimeWarning, stacklevel=3)


def _quote(value: str) -> str:
    """A SQL string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


class TrajectoryStore:
    """A folder of recorded trajectories: `append`, iterate, `get`, `query`, `groups`, `rescore`.

    `reward`, when given, scores every trajectory at `append` (see `Scorer`); a scorer that
    raises never loses the trajectory: it is written unscored, the reason in
    `metrics["reward_error"]`. `query`/`get` read rewards from the index (which `rescore`
    rewrites); iterating (`for t in store`) reads the JSONL exactly as written. After each scan
    `unreadable` holds `(offset, reason)` for lines that could not be read and `torn` the
    offsets of fenced partial lines left by killed writers.
    """

    def __init__(self, path: str | Path, reward: Scorer | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.file = self.path / "trajectories.jsonl"
        self.reward = reward
        self.unreadable: list[tuple[int, str]] = []
        self.torn: list[int] = []
        self._lock = threading.Lock()
        self._table: Any = None
        self._synced = (0, -1)  # (bytes of the JSONL checked against the index, file size then)

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The JSONL's descriptor (append mode) under this process's lock and the file lock."""
        with self._lock:
            fd = os.open(self.file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def append(self, trajectory: Trajectory) -> int:
        """Write one trajectory durably (scored first if the store has a scorer); return its byte
        offset in the JSONL file. The caller's object is never modified."""
        trajectory = self._scored(trajectory)
        try:
            line = (trajectory.model_dump_json() + "\n").encode()
        except pydantic_core.PydanticSerializationError:  # a lone surrogate: store U+FFFD instead
            trajectory = trajectory.storable()
            line = (trajectory.model_dump_json() + "\n").encode()
        with self._locked() as fd:
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
            self._add_row(_row(trajectory, end))  # under the file lock: see `_sync`
        return end

    def _scored(self, t: Trajectory) -> Trajectory:
        """A copy of `t` with the store's reward in its metrics (or the scorer's error)."""
        if self.reward is None:
            return t
        metrics = {k: v for k, v in t.metrics.items()
                   if k not in ("reward", "reward_components", "reward_error")}
        try:
            total, components = _score(self.reward, t)
            metrics |= {"reward": total, "reward_components": components}
        except Exception as e:  # a broken scorer must not lose the trajectory
            metrics["reward_error"] = _error(e)
        return t.model_copy(update={"metrics": metrics})

    def _add_row(self, row: dict[str, Any]) -> None:
        try:
            table = self._open_index(create=True)
            if table is not None:  # None: an index of an older layout, rebuilt by the next read
                table.add([row])
        except Exception as e:  # the line is durable; the next read indexes it (`_sync`)
            warnings.warn(f"trajectory {row['id']} is recorded but not yet indexed ({_error(e)}); "
                          "the next query indexes it", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ the index

    def _open_index(self, create: bool) -> Any:
        """The index table at its latest version; None if absent (and not `create`) or if it
        has an older column layout."""
        if self._table is not None:
            self._table.checkout_latest()
            return self._table
        import lancedb

        db = lancedb.connect(str(self.path / "index.lance"))
        if "trajectories" in db.list_tables().tables:
            table = db.open_table("trajectories")
            if table.schema.names == _INDEX_SCHEMA.names:
                self._table = table
        elif create:
            self._table = db.create_table("trajectories", schema=_INDEX_SCHEMA, exist_ok=True)
        return self._table

    def _line_offsets(self, start: int) -> tuple[list[int], int]:
        """Offsets of the non-blank complete lines from `start`, and where the last one ends."""
        offsets, pos = [], start
        if not self.file.exists():
            return offsets, pos
        with self.file.open("rb") as fh:
            fh.seek(start)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line still being written, or torn by a killed writer
                if raw.strip():
                    offsets.append(pos)
                pos += len(raw)
        return offsets, pos

    def _sync(self) -> Any:
        """The index table, first repaired if it lags the JSONL (a writer killed between its
        line and its row). Cheap when nothing changed: a `stat`, and a line count plus one
        `count_rows` over the bytes written since the last check."""
        size = self.file.stat().st_size if self.file.exists() else 0
        start, seen = self._synced
        table = self._open_index(create=False)
        if size == seen:
            return table
        offsets, end = self._line_offsets(start)
        indexed = 0 if table is None else table.count_rows(f"offset >= {start} AND offset < {end}")
        if indexed == len(offsets) and (table is not None or start == 0):
            self._synced = (end, size)
            return table
        with self._locked():  # writers add line and row under this lock: no row is in flight
            return self._repair(start, size)

    def _repair(self, start: int, size: int) -> Any:
        """Index the complete lines from `start` that have no row (call under the file lock)."""
        offsets, end = self._line_offsets(start)
        table = self._open_index(create=False)
        if table is None:
            if offsets or (self.path / "index.lance").exists():
                self._reindex(keep_rewards=True)
            self._synced = (end, size)
            return self._table
        indexed = set(self._index_column(table, "offset", f"offset >= {start} AND offset < {end}"))
        if indexed - set(offsets):  # rows that point at no line: the index is not of this file
            self._reindex(keep_rewards=True)
        else:
            lines = list(self._read_lines([o for o in offsets if o not in indexed]))
            if rows := [_row(t, o) for o, t, _ in lines if t is not None]:
                table.add(rows)
            if unreadable := [(o, why) for o, _, why in lines if why is not None]:
                _warn_unreadable(self.file, unreadable)
        self._synced = (end, size)
        return self._table

    @staticmethod
    def _index_column(table: Any, column: str, where: str | None = None) -> list[Any]:
        query = table.search()
        if where:
            query = query.where(where)
        return query.select([column]).limit(_ALL).to_arrow()[column].to_pylist()

    def _old_rewards(self) -> dict[tuple[int, str], tuple[float | None, str | None]]:
        """(offset, id) -> (reward, components) of the current index, whatever its layout."""
        import lancedb

        db = lancedb.connect(str(self.path / "index.lance"))
        try:
            table = db.open_table("trajectories")
            cols = [c for c in ("offset", "id", "reward", "components") if c in table.schema.names]
            rows = table.search().select(cols).limit(_ALL).to_arrow().to_pylist()
        except Exception:  # no index, or an unreadable one: the JSONL's own rewards serve
            return {}
        return {(r["offset"], r["id"]): (r.get("reward"), r.get("components")) for r in rows}

    def _reindex(self, keep_rewards: bool) -> int:
        kept = self._old_rewards() if keep_rewards else {}
        rows = [_row(t, off, kept.get((off, t.id))) for off, t in self._scan()]
        import lancedb

        db = lancedb.connect(str(self.path / "index.lance"))
        self._table = db.create_table("trajectories", pa.Table.from_pylist(rows, _INDEX_SCHEMA),
                                      mode="overwrite")
        return len(rows)

    def reindex(self, keep_rewards: bool = True) -> int:
        """Rebuild the index from the JSONL (keeping the index's rewards, e.g. from `rescore`,
        unless `keep_rewards=False`); return the number of rows."""
        size = self.file.stat().st_size if self.file.exists() else 0
        with self._locked():
            n = self._reindex(keep_rewards)
            self._synced = (self._line_offsets(0)[1], size)
        return n

    def rescore(self, reward: Scorer) -> int:
        """Score every stored trajectory with `reward` into the index's `reward` and `components`
        (the JSONL stays as written); return how many were scored. A trajectory the scorer
        fails on is left unscored (null reward) and reported in one warning."""
        self._sync()
        rows, errors = [], []
        for off, t in self._scan():
            try:
                total, components = _score(reward, t)
                rows.append(_row(t, off, (total, json.dumps(components, sort_keys=True))))
            except Exception as e:
                errors.append(f"{t.id}: {_error(e)}")
                rows.append(_row(t, off, (None, None)))
        if rows:
            with self._locked():
                (self._open_index(create=True).merge_insert("offset").when_matched_update_all()
                 .when_not_matched_insert_all().execute(pa.Table.from_pylist(rows, _INDEX_SCHEMA)))
        if errors:
            warnings.warn(f"rescore: {len(errors)} trajectories could not be scored and are left "
                          f"unscored (first: {errors[0]})", RuntimeWarning, stacklevel=2)
        return len(rows) - len(errors)

    # ------------------------------------------------------------------ reading

    def _scan(self) -> Iterator[tuple[int, Trajectory]]:
        """(offset, trajectory) for every readable line, as written; fills `unreadable`/`torn`."""
        self.unreadable, self.torn = unreadable, torn = [], []
        if not self.file.exists():
            return
        offset = 0
        with self.file.open("rb") as fh:
            for raw in fh:
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n") or not raw.strip():
                    continue  # a torn last line (a write in progress or killed) or a fence
                t, why = _parse(raw)
                if t is not None:
                    yield start, t
                elif why is None:
                    torn.append(start)
                else:
                    unreadable.append((start, why))
        if unreadable:
            _warn_unreadable(self.file, unreadable)

    def _read_lines(self, offsets: list[int]) -> Iterator[tuple[int, Trajectory | None, str | None]]:
        """`_parse` of the line at each offset, with the offset."""
        with self.file.open("rb") as fh:
            for off in offsets:
                fh.seek(off)
                yield off, *_parse(fh.readline())

    def __iter__(self) -> Iterator[Trajectory]:
        return (t for _, t in self._scan())

    def __len__(self) -> int:
        return sum(1 for _ in self._scan())

    @staticmethod
    def _rewards(table: Any, where: str | None = None) -> dict[int, dict[str, Any]]:
        """offset -> {reward, components} of the index rows matching `where` (one per line,
        even if a line were indexed twice)."""
        if table is None:
            return {}
        query = table.search() if where is None else table.search().where(where)
        rows = query.select(["offset", "reward", "components"]).limit(_ALL).to_arrow().to_pylist()
        return {r["offset"]: r for r in rows}

    def query(self, where: str | Callable[[Trajectory], bool] | None = None) -> list[Trajectory]:
        """Trajectories matching a SQL filter on the index (`"reward >= 0.5 AND model = 'x'"`)
        or a Python predicate, in the order they were written, with the index's rewards."""
        table = self._sync()
        if isinstance(where, str):
            if table is None:
                return []
            rows = self._rewards(table, where)
            found = [(o, t) for o, t, _ in self._read_lines(sorted(rows)) if t is not None]
        else:
            rows = self._rewards(table)
            found = list(self._scan())
        out = [t if o not in rows else _with_reward(t, rows[o]["reward"], rows[o]["components"])
               for o, t in found]
        return out if where is None or isinstance(where, str) else [t for t in out if where(t)]

    def get(self, trajectory_id: str) -> Trajectory:
        """One trajectory by id (KeyError if absent)."""
        found = self.query(f"id = {_quote(trajectory_id)}")
        if not found:
            raise KeyError(trajectory_id)
        return found[0]

    def groups(self) -> dict[str, list[Trajectory]]:
        """Trajectories by `group_id` (the samples of one task), as written in the JSONL."""
        out: dict[str, list[Trajectory]] = {}
        for t in self:
            out.setdefault(t.group_id or t.id, []).append(t)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for a quick look, including lines that could not be read."""
        trajs = list(self)
        return {"trajectories": len(trajs), "groups": len({t.group_id for t in trajs}),
                "tasks": len({t.task_id for t in trajs}),
                "models": sorted({t.model for t in trajs}),
                "unreadable": len(self.unreadable), "torn": len(self.torn),
                "path": str(self.path)}
