"""Trajectories -> training samples: one per model call, with group-relative advantages.

A sample is the exact prompt and completion token ids a model call recorded, the logprobs it
sampled them with, its role, its trajectory's reward and reward components, and an advantage
normalised within the trajectory's group (the samples of one task): (r - mean) / (std + eps),
optionally per role. Only completion tokens are trainable: the prompt (instructions,
retrieved passages, earlier tool outputs) always has mask 0, because nothing is re-tokenised.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from graph.trajectory import Gold, Trajectory
from training.rewards import Reward, RewardFn, as_reward


@dataclass
class Sample:
    """One model call of one trajectory, ready for a policy-gradient or SFT step."""

    trajectory_id: str
    task_id: str | None
    group_id: str | None
    role: str
    model: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    reward: float
    components: dict[str, float] = field(default_factory=dict)
    advantage: float = 0.0


def scale_mode(scale_rewards: str | bool) -> str:
    """TRL's `scale_rewards` values as one of "group", "batch", "none"."""
    mode = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # type: ignore[arg-type]
    if mode not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', not {scale_rewards!r}")
    return str(mode)


def group_advantages(rewards: Sequence[float], eps: float = 1e-6, *,
                     scale_rewards: str | bool = "group", batch_std: float = 1.0) -> list[float]:
    """r - the group's mean, divided by the group's std (population; "group", GRPO), by the
    batch's std ("batch"), or by nothing ("none": Dr. GRPO, which keeps a group's small
    reward differences small). 0 for a group of one.

    >>> [round(a, 3) for a in group_advantages([1.0, 0.0, 0.0, 1.0])]
    [1.0, -1.0, -1.0, 1.0]
    >>> group_advantages([0.1, 0.0], scale_rewards="none")  # shaping noise stays small
    [0.05, -0.05]
    >>> group_advantages([0.5, 0.5])
    [0.0, 0.0]
    """
    if len(rewards) < 2:
        return [0.0] * len(rewards)
    mean = statistics.fmean(rewards)
    std = {"group": statistics.pstdev(rewards) + eps, "batch": batch_std + eps,
           "none": 1.0}[scale_mode(scale_rewards)]
    return [(r - mean) / std for r in rewards]


def score(trajectories: Iterable[Trajectory], reward: Reward | None = None,
          tasks: Mapping[str, Mapping[str, Any]] | None = None
          ) -> list[tuple[Trajectory, float, dict[str, float]]]:
    """Each trajectory with its reward and components: scored by `reward` (against its task's
    gold when `tasks` has it, else the gold it carries), or read from what the store recorded
    (`metrics["reward"]`) when no reward is given."""
    out = []
    for t in trajectories:
        if reward is not None:
            task = (tasks or {}).get(t.task_id or "")
            comps = reward.scores(t, Gold.from_task(task) if task is not None else None)
            out.append((t, comps["reward"], comps))
            continue
        r = t.metrics.get("reward")
        if not isinstance(r, int | float):
            raise ValueError(f"trajectory {t.id} has no stored reward: pass reward= (or record "
                             "with TrajectoryStore(..., reward=...), or store.rescore(reward))")
        comps = dict(t.metrics.get("reward_components") or {})
        out.append((t, float(r), {**comps, "reward": float(r)}))
    return out


def build_samples(trajectories: Iterable[Trajectory], reward: Reward | RewardFn | None = None, *,
                  tasks: Mapping[str, Mapping[str, Any]] | None = None, per_role: bool = False,
                  scale_rewards: str | bool = "group", eps: float = 1e-6,
                  min_reward: float | None = None,
                  roles: Iterable[str] | None = None, task_ids: Iterable[str] | None = None,
                  models: Iterable[str] | None = None) -> list[Sample]:
    """One `Sample` per recorded model call (calls without token ids are skipped).

    Advantages are computed over whole groups before any filter, so filtering never
    changes a sample's advantage. `per_role` gives each role its own group baseline: for a
    role, the group is the trajectories of the task that made calls of that role.
    `scale_rewards` divides by the group's or the batch's std, or not at all (as TRL's).
    """
    scored = score(trajectories, None if reward is None else as_reward(reward), tasks)
    by_group: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (t, _, _) in enumerate(scored):
        roles_here = {s.role for s in t.model_steps} if per_role else {""}
        for role in roles_here:
            by_group[(t.group_id or t.id, role)].append(i)
    adv: dict[tuple[int, str], float] = {}
    batch_std = statistics.pstdev([r for _, r, _ in scored]) if len(scored) > 1 else 0.0
    for (_, role), members in by_group.items():
        advantages = group_advantages([scored[i][1] for i in members], eps,
                                      scale_rewards=scale_rewards, batch_std=batch_std)
        for i, a in zip(members, advantages, strict=True):
            adv[(i, role)] = a
    keep_roles = set(roles) if roles is not None else None
    keep_tasks = set(task_ids) if task_ids is not None else None
    keep_models = set(models) if models is not None else None
    samples = []
    for i, (t, r, comps) in enumerate(scored):
        if min_reward is not None and r < min_reward:
            continue
        if keep_tasks is not None and t.task_id not in keep_tasks:
            continue
        for s in t.model_steps:
            if not s.completion_token_ids or s.prompt_token_ids is None:
                continue
            if keep_roles is not None and s.role not in keep_roles:
                continue
            model = s.model or t.model
            if keep_models is not None and model not in keep_models:
                continue
            samples.append(Sample(
                trajectory_id=t.id, task_id=t.task_id, group_id=t.group_id, role=s.role,
                model=model, prompt_ids=list(s.prompt_token_ids),
                completion_ids=list(s.completion_token_ids),
                logprobs=list(s.logprobs or [0.0] * len(s.completion_token_ids)), reward=r,
                components=comps, advantage=adv[(i, s.role if per_role else "")]))
    return samples


def balance_roles(samples: Sequence[Sample]) -> list[Sample]:
    """The samples with every role equally often: smaller roles repeated in turn up to the
    largest role's count (a writer call is one in six of a run's calls, yet the hardest)."""
    by_role: dict[str, list[Sample]] = {}
    for s in samples:
        by_role.setdefault(s.role, []).append(s)
    most = max((len(v) for v in by_role.values()), default=0)
    return [rows[i % len(rows)] for rows in by_role.values() for i in range(most)]


def loss_mask(sample: Sample) -> list[int]:
    """1 for completion tokens (trainable), 0 for every prompt token.

    >>> loss_mask(Sample("t", None, None, "writer", "m", [5, 6, 7], [8, 9], [-1.0, -2.0], 1.0))
    [0, 0, 0, 1, 1]
    """
    return [0] * len(sample.prompt_ids) + [1] * len(sample.completion_ids)


def to_dataset(samples: Sequence[Sample]) -> Any:
    """A HF `datasets.Dataset`: input_ids, completion_mask, labels (-100 off the completion),
    old_logprobs (per completion token), advantage, reward, components and ids."""
    from datasets import Dataset

    rows: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        mask = loss_mask(s)
        ids = s.prompt_ids + s.completion_ids
        rows["input_ids"].append(ids)
        rows["completion_mask"].append(mask)
        rows["labels"].append([t if m else -100 for t, m in zip(ids, mask, strict=True)])
        rows["old_logprobs"].append(s.logprobs)
        for key in ("advantage", "reward", "role", "model", "trajectory_id", "group_id",
                    "task_id"):
            rows[key].append(getattr(s, key))
        rows["components"].append({k: float(v) for k, v in s.components.items()})
    return Dataset.from_dict(dict(rows))


def as_records(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Samples as plain dicts."""
    return [asdict(s) for s in samples]
