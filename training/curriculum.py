"""A curriculum over generated worlds: fresh tasks every step, drawn where the policy is
sometimes right.

Group-relative RL learns only from groups whose outcomes differ: a task the policy always
fails (or always solves) gives every rollout the same correctness and no signal. The
`Curriculum` keeps a success estimate per difficulty level (chain length, bridge or
comparison, distractor pages, paraphrased wording) and draws levels with weight
p·(1 − p) — highest where the group success rate is strictly between 0 and 1 — from a
Beta(1, 1) posterior, so unvisited levels get tried. With `balance_kinds` (the default) a
step's tasks are split evenly between the kinds (bridge, comparison) first and the levels
weighted within each kind: weighting alone drew comparisons only once bridges failed, and a
policy trained on comparisons alone learned to stop after one search round, which broke
bridges (`benchmarks/results/learning_rall_grpo.json`). Tasks are never reused: each level
generates a new world (the next seed from `first_seed` on) when its tasks run out, so
there is no fixed training set to memorise. Keep those seeds clear of every held-out
world's seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.worlds import generate_world


@dataclass(frozen=True)
class Level:
    """One difficulty level of generated tasks."""

    hops: int = 2  # pages to read: the bridge chain's length, or both sides of a comparison
    kind: str = "bridge"  # bridge | comparison
    distractors: int = 6
    paraphrase: float = 0.3

    @property
    def name(self) -> str:
        """A short label, e.g. `bridge-2h-d6-p0.3`."""
        return f"{self.kind}-{self.hops}h-d{self.distractors}-p{self.paraphrase:g}"


DEFAULT_LEVELS = tuple(Level(h, k, d, p) for k, hops in (("bridge", (2, 3)), ("comparison", (2, 4)))
                       for h in hops for d in (4, 8) for p in (0.0, 0.5))


@dataclass
class _Tally:
    right: float = 0.0
    runs: int = 0

    @property
    def rate(self) -> float:
        """Posterior mean success rate under a Beta(1, 1) prior."""
        return (self.right + 1) / (self.runs + 2)


@dataclass
class Curriculum:
    """Draws fresh generated tasks from the levels where success is neither 0 nor 1."""

    first_seed: int = 1_000_000
    levels: Sequence[Level] = DEFAULT_LEVELS
    world_tasks: int = 24
    seed: int = 0
    balance_kinds: bool = True  # every kind equally often; levels weighted within a kind
    tallies: dict[Level, _Tally] = field(default_factory=dict)
    _pending: dict[Level, list[dict[str, Any]]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a curriculum needs at least one level")
        self._rng = random.Random(self.seed)
        self.next_seed = self.first_seed
        for level in self.levels:
            self.tallies.setdefault(level, _Tally())

    def weight(self, level: Level) -> float:
        """How much a level is wanted now: p(1 - p) of its success estimate."""
        p = self.tallies[level].rate
        return p * (1 - p)

    def draw(self, level: Level) -> dict[str, Any]:
        """The next fresh task of a level (a new world is generated when its tasks run out)."""
        queue = self._pending.setdefault(level, [])
        if not queue:
            self.next_seed += 1
            world = generate_world(self.next_seed - 1, self.world_tasks, hops=(level.hops,),
                                   distractors=level.distractors, paraphrase=level.paraphrase,
                                   comparison_share=1.0 if level.kind == "comparison" else 0.0)
            queue.extend(t for t in world.tasks if t["type"] == level.kind)
            if not queue:
                raise RuntimeError(f"level {level.name} generated no {level.kind} task")
        task = queue.pop(0)
        return {**task, "meta": {**task.get("meta", {}), "level": level.name}}

    def sample(self, n: int) -> list[dict[str, Any]]:
        """n fresh tasks, their levels drawn by weight (within each kind, the kinds in turn,
        with `balance_kinds`)."""
        if not self.balance_kinds:
            pools = [list(self.levels)] * n
        else:
            kinds = sorted({lv.kind for lv in self.levels})
            start = self._rng.randrange(len(kinds))  # which kind an odd task goes to
            pools = [[lv for lv in self.levels if lv.kind == kinds[(start + i) % len(kinds)]]
                     for i in range(n)]
        levels = [self._rng.choices(pool, [self.weight(lv) for lv in pool])[0] for pool in pools]
        return [self.draw(level) for level in levels]

    def update(self, task: dict[str, Any], outcomes: Sequence[float]) -> None:
        """Book a group's outcomes (1 right, 0 wrong) for the task's level."""
        level = self.level_of(task)
        tally = self.tallies[level]
        tally.right += sum(outcomes)
        tally.runs += len(outcomes)

    def level_of(self, task: dict[str, Any]) -> Level:
        """The level a task was drawn from."""
        name = (task.get("meta") or {}).get("level")
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(f"task {task.get('id')!r} was not drawn by this curriculum")

    def state(self) -> dict[str, dict[str, float]]:
        """Per level: runs, successes and the current estimate (for logs)."""
        return {lv.name: {"runs": t.runs, "right": t.right, "rate": round(t.rate, 4)}
                for lv, t in self.tallies.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where it stands (JSON-ready)."""
        return {"next_seed": self.next_seed, "rng": list(self._rng.getstate()[1]),
                "rng_pos": self._rng.getstate()[2],
                "tallies": {lv.name: asdict(t) for lv, t in self.tallies.items()},
                "pending": {lv.name: q for lv, q in self._pending.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`."""
        by_name = {lv.name: lv for lv in self.levels}
        self.next_seed = int(state["next_seed"])
        self._rng.setstate((3, tuple(state["rng"]), state["rng_pos"]))
        for name, tally in state["tallies"].items():
            self.tallies[by_name[name]] = _Tally(**tally)
        self._pending = {by_name[name]: list(q) for name, q in state["pending"].items()}


__all__ = ["DEFAULT_LEVELS", "Curriculum", "Level"]
