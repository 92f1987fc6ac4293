"""Trajectory-level GRPO: learn the research agents' behaviour from group-relative rewards.

`ResearchGRPOTrainer(model, reward, args, train_dataset=tasks)` trains in TRL's idiom. Each
step draws tasks, runs `args.num_generations` research rollouts per task through the same
LangGraph research graph with the current policy (a `LocalChatModel` sharing the trainer's
live weights, its calls batched), scores each rollout once with a `Reward`, normalises the
rewards within each task's group (optionally per role), and takes a clipped policy-gradient
step over the completion tokens of every model call, against the logprobs recorded when the
tokens were sampled. Prompts, tool outputs and retrieved text never carry loss.

The batch is TRL's: `args.per_device_train_batch_size` counts completions, here whole
research rollouts, so a step draws `per_device_train_batch_size // num_generations` tasks
(it must divide). `args.max_steps` steps, checkpoints every `args.save_steps` into
`args.output_dir`, LoRA through `peft_config`; the `GRPOConfig` passed in is never changed.
With `eval_dataset` (held-out tasks) and TrainingArguments' `eval_strategy="steps"`,
`eval_steps=N`, every N steps the policy answers the held-out tasks greedily and their EM,
knowledge F1, retrieval accuracy and the rest of `training.evaluate`'s metrics are logged as
an eval row (keys `eval_*`, as TRL's trainers prefix them) and drawn in `curves.png`.
Every row also goes to the trackers TrainingArguments' `report_to` names (TensorBoard, W&B:
`training.trackers.MetricsLogger`), as a TRL trainer's logs do.

What comes from TRL, and why not its trainer: the hyperparameters are TRL's `GRPOConfig`
(learning rate, `epsilon`/`epsilon_high` clipping, `beta` KL, `loss_type`, `num_iterations`,
`temperature`, `max_grad_norm`, `save_steps`, `seed`), the per-token loss is TRL's (same
clipping, k3 KL, and `grpo`/`bnpo`/`dapo`/`dr_grpo` aggregation, see `policy_loss`), and
log-probabilities use TRL's `selective_log_softmax`. `GRPOTrainer` itself generates one
completion per prompt and buffers generation batches of fixed shape; a research rollout is
several model calls with different prompts, roles and lengths, so the rollout and the step
are ours (with `rollout_func`, TRL would see one prompt/completion pair per rollout and lose
the per-call structure). LoRA comes from PEFT, optimiser and schedule from torch/transformers,
the policy from `training.policy`, the knowledge to search from `tools.corpora`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from trl import GRPOConfig
from trl.trainer.utils import selective_log_softmax

from agents.models import LocalChatModel
from graph.config import ResearchConfig
from graph.run import research_many
from graph.trajectory import Trajectory
from tools import device as devices
from tools.corpora import Sources, corpus_of, open_corpus
from training import rewards
from training.data import Sample, build_samples
from training.evaluate import load_tasks, mean_scores
from training.offpolicy import importance_weights
from training.policy import (
    is_peft,
    load_policy,
    peft_config_from,
    restore_weights,
    save_policy,
    save_weights,
    trainable_parameters,
)
from training.shared_prefix import PrefixNode, SharedPrefix, prefix_tree
from training.trackers import MetricsLogger, report_targets, tensorboard_dir

if TYPE_CHECKING:
    from peft import LoraConfig

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
LEARNING_RATE = {False: 5e-6, True: 2e-4}  # full fine-tune, LoRA


@dataclass
class ResearchGRPOConfig(GRPOConfig):
    """TRL's `GRPOConfig` plus what trajectory-level GRPO over research runs adds."""

    dynamic_sampling: bool = field(default=True, metadata={"help": (
        "Drop from the update the groups whose rollouts are all right or all wrong (exact "
        "match), as DAPO's dynamic sampling does: their rewards differ only by shaping terms, "
        "and training on those taught an earlier run to search less.")})
    rollout_engine: str = field(default="transformers", metadata={"help": (
        "What samples the rollouts (`agents.engines`): 'transformers' (in-process, exact), "
        "'ct2-int8' (CTranslate2 int8 on the CPU) or 'openai' (a vLLM server; "
        "rollout_engine_options base_url and served_model). The last two are corrected for "
        "their logprob mismatch with TRL's vllm_importance_sampling_* settings.")})
    rollout_engine_options: dict = field(default_factory=dict, metadata={"help": (
        "The engine's own settings, e.g. {'base_url': 'http://127.0.0.1:8000/v1', "
        "'served_model': 'HuggingFaceTB/SmolLM2-135M-Instruct'}.")})
    share_prefix: bool = field(default=True, metadata={"help": (
        "In the update, run each distinct prompt prefix once per step and the calls that "
        "share it as suffixes against its keys and values (exact; `training.shared_prefix`).")})


def grpo_config(output_dir: str | Path, *, lora: bool = False, **overrides: Any) -> ResearchGRPOConfig:
    """`ResearchGRPOConfig` with CPU-friendly defaults (fp32, no gradient checkpointing).

    A step is 2 tasks x 4 rollouts (`per_device_train_batch_size=8`, `num_generations=4`);
    the learning rate defaults to 5e-6, or 2e-4 for a LoRA adapter (`lora=True`).
    Advantages are not divided by the group's std (`scale_rewards="none"`, Dr. GRPO: with a
    rarely right policy the std comes from shaping terms alone, and dividing by it blows
    them up to full size), and groups whose correctness does not vary are dropped
    (`dynamic_sampling=True`); `scale_rewards="group"`, `dynamic_sampling=False` restore
    plain GRPO.
    """
    values = {"output_dir": str(output_dir), **devices.trainer_settings(), "report_to": "none",
              "learning_rate": LEARNING_RATE[lora], "num_generations": 4,
              "per_device_train_batch_size": 8, "temperature": 1.0, "epsilon": 0.2, "beta": 0.0,
              "loss_type": "dapo", "num_iterations": 1, "max_grad_norm": 1.0, "save_steps": 10,
              "max_steps": 20, "seed": 0, "logging_steps": 1, "scale_rewards": "none",
              "dynamic_sampling": True}
    values.update(overrides)
    tasks_per_step(values["per_device_train_batch_size"], values["num_generations"])
    return ResearchGRPOConfig(**values)


def tasks_per_step(batch_size: int, num_generations: int) -> int:
    """Tasks drawn per step: TRL's batch counts completions (here: research rollouts), and
    each task gets `num_generations` of them, so the batch must be a multiple of it."""
    if num_generations < 2:
        raise ValueError(f"num_generations must be at least 2, not {num_generations}: GRPO "
                         "compares the rollouts of one task with each other")
    if batch_size % num_generations:
        raise ValueError(f"per_device_train_batch_size ({batch_size}) must be a multiple of "
                         f"num_generations ({num_generations}): each step trains whole groups "
                         "of num_generations rollouts of one task")
    return batch_size // num_generations


def with_changes(args: GRPOConfig, **changes: Any) -> GRPOConfig:
    """A copy of `args` with `changes` (the original is untouched). TRL derives the
    generation batch from the train batch; it is derived again for the copy."""
    return dataclasses.replace(args, generation_batch_size=None, **changes)


# --------------------------------------------------------------------------- the loss


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                loss_type: str = "dapo", ref_logps: torch.Tensor | None = None,
                beta: float = 0.0, max_completion_length: int | None = None,
                importance: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's clipped GRPO loss on padded (N, T) per-token log-probabilities.

    `advantages` is (N,); `mask` is 1 on completion tokens; `importance` (N, T) weights each
    token's loss (a sampler that is not the trainer: `training.offpolicy`). Aggregation as
    TRL's loss types: grpo = mean over sequences of the per-sequence token mean; bnpo/dapo =
    mean over all tokens; dr_grpo = sum / (N * max_completion_length).
    """
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta and ref_logps is not None:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    if importance is not None:
        per_token = per_token * importance
    mask = mask.to(per_token.dtype)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * (max_completion_length or per_token.size(1)))
    else:
        raise ValueError(f"loss_type must be grpo, bnpo, dapo or dr_grpo, not {loss_type!r}")
    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        stats = {"clip_ratio": float((((ratio < 1 - epsilon_low) | (ratio > 1 + epsilon_high))
                                      .to(mask.dtype) * mask).sum() / n),
                 "kl": float((kl * mask).sum() / n) if kl is not None else 0.0}
    return loss, stats


def completion_logps(model: Any, sample: Sample, temperature: float) -> torch.Tensor:
    """Log-probabilities of a sample's completion tokens under the model (at temperature T)."""
    device = devices.of(model)
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids], device=device)
    n = len(sample.completion_ids)
    logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1, :].float()
    return selective_log_softmax(logits / (temperature if temperature > 0 else 1.0),
                                 torch.tensor(sample.completion_ids, device=device))


def _sample_loss(logps: torch.Tensor, sample: Sample, ref_logps: torch.Tensor | None,
                 args: GRPOConfig, old: _Old | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """`policy_loss` of one sample (one row: no padding) from its completion's logprobs under
    the policy, as its loss type aggregates a row. Without `old`, the sampler's recorded
    logprobs are the old policy's; with it, the trainer's (and their importance weights)."""
    logps = logps.unsqueeze(0)
    if old is None:
        old_logps, weights = torch.tensor([sample.logprobs], device=logps.device,
                                          dtype=logps.dtype), None
    else:
        old_logps, weights = old.logps.unsqueeze(0), old.weights
    adv = torch.tensor([sample.advantage], device=logps.device, dtype=logps.dtype)
    eps_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    return policy_loss(logps, old_logps, adv, torch.ones_like(old_logps), epsilon_low=args.epsilon,
                       epsilon_high=eps_high, ref_logps=ref_logps, beta=args.beta,
                       loss_type="grpo" if args.loss_type == "grpo" else "bnpo",
                       importance=None if weights is None else weights.unsqueeze(0))


@dataclass
class _Old:
    """The old policy's logprobs of a sample taken from the trainer's first forward pass,
    and the importance weights correcting for the sampler (None: not corrected)."""

    logps: torch.Tensor
    weights: torch.Tensor | None


def _old_from_trainer(logps: torch.Tensor, sample: Sample, args: GRPOConfig) -> _Old:
    """The trainer's own logprobs as the old policy's, and TRL-style importance weights
    pi_trainer / pi_sampler when `vllm_importance_sampling_correction` is on."""
    weights = None
    if args.vllm_importance_sampling_correction:
        sampler = torch.tensor(sample.logprobs, device=logps.device, dtype=logps.dtype)
        weights = importance_weights(logps, sampler, mode=args.vllm_importance_sampling_mode,
                                     clip_min=args.vllm_importance_sampling_clip_min,
                                     clip_max=args.vllm_importance_sampling_clip_max)
    return _Old(logps.detach(), weights)


def _loss_weight(args: GRPOConfig, tokens: int, samples: Sequence[Sample]) -> float:
    """The weight of one sample's loss so that the accumulated sum is the batch loss."""
    if args.loss_type == "grpo":
        return 1.0 / len(samples)
    if args.loss_type == "dr_grpo":
        width = args.max_completion_length or max(len(s.completion_ids) for s in samples)
        return tokens / (len(samples) * width)
    return tokens / sum(len(s.completion_ids) for s in samples)


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    samples: Sequence[Sample], refs: Sequence[torch.Tensor | None],
                    args: GRPOConfig, scheduler: Any,
                    olds: list[_Old | None] | None = None) -> dict[str, float]:
    """One optimiser step on the batch loss, accumulated one sample at a time (calls that
    share a prompt prefix run as suffixes of it, unless `args.share_prefix` is off)."""
    optimizer.zero_grad(set_to_none=True)
    loss_sum, clip_sum, kl_sum = 0.0, 0.0, 0.0
    tree = (prefix_tree(samples) if getattr(args, "share_prefix", True)
            else PrefixNode([], list(range(len(samples)))))

    def visit(node: PrefixNode, parent: SharedPrefix | None) -> None:
        nonlocal loss_sum, clip_sum, kl_sum
        shared = SharedPrefix(model, node.prefix, parent) if node.prefix else None
        for i in node.members:
            sample = samples[i]
            logps = (shared.completion_logps(sample, args.temperature) if shared
                     else completion_logps(model, sample, args.temperature))
            if olds is not None and olds[i] is None:  # first inner epoch, inexact sampler
                olds[i] = _old_from_trainer(logps, sample, args)
            loss, stats = _sample_loss(logps, sample, refs[i], args, olds[i] if olds else None)
            n = len(sample.completion_ids)
            weight = _loss_weight(args, n, samples)
            (loss * weight).backward()
            loss_sum += float(loss.detach()) * weight
            clip_sum += stats["clip_ratio"] * n
            kl_sum += stats["kl"] * n
        for child in node.children:
            visit(child, shared)
        if shared:
            shared.backward()

    visit(tree, None)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    tokens = sum(len(s.completion_ids) for s in samples)
    return {"loss": loss_sum, "clip_ratio": clip_sum / tokens, "kl": kl_sum / tokens,
            "grad_norm": float(grad_norm), "trained_samples": len(samples)}


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, samples: Sequence[Sample],
           args: GRPOConfig, ref_model: Any = None, scheduler: Any = None,
           exact_sampler: bool = True) -> dict[str, float]:
    """`args.num_iterations` clipped policy-gradient steps on these samples; returns stats.

    Samples are processed one at a time (CPU: no padding waste) with their gradients
    accumulated, so each optimiser step sees the loss of the whole batch, aggregated as
    `policy_loss` does. With an exact sampler (the in-process engine; stored groups of the
    same policy) the recorded logprobs are the clipped ratio's denominators; otherwise
    (`exact_sampler=False`: CTranslate2 int8, a vLLM server) the trainer's own logprobs
    are, with truncated importance sampling for the sampler's mismatch (`training.offpolicy`).
    """
    kl = bool(args.beta) and ref_model is not None
    active = [s for s in samples if s.advantage != 0.0 or kl]
    if not active:
        return {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0, "trained_samples": 0}
    with torch.no_grad():
        refs = [completion_logps(ref_model, s, args.temperature).unsqueeze(0) if kl else None
                for s in active]
    olds: list[_Old | None] | None = None if exact_sampler else [None] * len(active)
    model.train()
    try:
        for _ in range(max(1, args.num_iterations)):
            stats = _optimizer_step(model, optimizer, active, refs, args, scheduler, olds)
    finally:
        model.eval()
    if olds is not None:
        stats.update(_mismatch(active, olds))
    return stats


def _mismatch(samples: Sequence[Sample], olds: Sequence[_Old | None]) -> dict[str, float]:
    """How far the sampler's logprobs were from the trainer's, and how many tokens the
    importance weights kept."""
    gaps = [(o.logps.cpu() - torch.tensor(s.logprobs)).abs() for s, o in zip(samples, olds, strict=True) if o]
    kept = [(o.weights > 0).float() for o in olds if o is not None and o.weights is not None]
    return {"sampler_logp_gap": float(torch.cat(gaps).mean()) if gaps else 0.0,
            "importance_kept": float(torch.cat(kept).mean()) if kept else 1.0}


# --------------------------------------------------------------------------- the trainer


class _AdapterOff:
    """Calls a PEFT model with its adapter disabled: the frozen reference for the KL term."""

    def __init__(self, model: Any):
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.device

    def __call__(self, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(**kwargs)


def reference_model(model: Any) -> Any:
    """The start policy, frozen, for the KL term: a new LoRA adapter (all B = 0) is the
    identity, so the model with its adapter off; otherwise a frozen copy."""
    if is_peft(model) and all(not p.any() for n, p in model.named_parameters() if "lora_B" in n):
        return _AdapterOff(model)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _scores(t: Trajectory) -> dict[str, float]:
    """A scored trajectory's reward components and total, as a store records them."""
    return {**t.metrics.get("reward_components", {}), "reward": t.metrics["reward"]}


def sampled(trajectories: list[Trajectory]) -> list[Trajectory]:
    """The rollouts, or an error when not one of their model calls returned tokens: a broken
    sampler (e.g. an engine whose weight sync fails) would otherwise give steps that train on
    nothing, with every call's error recorded only in the trajectories."""
    steps = [s for t in trajectories for s in t.model_steps]
    if steps and not any(s.completion_token_ids for s in steps):
        errors = [s.error for s in steps if s.error]
        raise RuntimeError(f"no model call of this step's {len(trajectories)} rollouts returned "
                           f"tokens to train on; " + (f"{len(errors)} failed, the first with: "
                                                      f"{errors[0]}" if errors else "none failed"))
    return trajectories


def step_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Means over one step's scored rollouts: reward, its components, EM, F1, knowledge F1,
    evidence F1, retrieval accuracy, searches, format, tokens."""
    n = max(1, len(trajectories))
    scores = [_scores(t) for t in trajectories]
    out = {f"reward/{k}": sum(s[k] for s in scores) / n for k in scores[0]} if scores else {}
    out.update({
        "em": sum(rewards.exact_match(t) for t in trajectories) / n,
        "f1": sum(rewards.f1(t) for t in trajectories) / n,
        "knowledge_f1": sum(rewards.knowledge_f1(t) for t in trajectories) / n,
        "evidence_f1": sum(rewards.evidence_f1(t) for t in trajectories) / n,
        "retrieval_accuracy": sum(rewards.retrieval_accuracy(t) for t in trajectories) / n,
        "searches": sum(len(rewards.searches(t)) for t in trajectories) / n,
        "searches_after_miss": sum(rewards.searches_after_miss(t) for t in trajectories) / n,
        "format_rate": sum(rewards.format_rate(t) for t in trajectories) / n,
        "model_calls": sum(len(t.model_steps) for t in trajectories) / n,
        "tokens": sum(t.metrics.get("tokens", 0) for t in trajectories) / n})
    return out


@dataclass
class GRPOState:
    """What a checkpoint holds besides the weights and the optimiser."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    sampler: dict[str, Any] | None = None  # a task sampler's own state (a curriculum's)
    eval_history: list[dict[str, float]] = field(default_factory=list)  # held-out evaluations

    def rows(self) -> list[dict[str, float]]:
        """Every logged row in order: each step's, then the evaluation after it (if any)."""
        return sorted([*self.history, *self.eval_history],
                      key=lambda r: (r["step"], is_eval_row(r)))


def is_eval_row(row: Mapping[str, Any]) -> bool:
    """Whether a metrics row is a held-out evaluation's (its metrics are named `eval_*`)."""
    return "eval_runtime" in row


def eval_interval(args: GRPOConfig) -> int:
    """Steps between held-out evaluations, from TrainingArguments' `eval_strategy` ("no": 0;
    "steps": `eval_steps`, a fraction of `max_steps` when below 1, else `logging_steps`)."""
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    if strategy == "no":
        return 0
    if strategy != "steps":
        raise ValueError(f"eval_strategy must be 'no' or 'steps', not {strategy!r}: research "
                         "GRPO counts steps, not epochs")
    every = args.eval_steps or args.logging_steps or 1
    return max(1, math.ceil(args.max_steps * every) if every < 1 else int(every))


class TaskSampler(Protocol):
    """Where a trainer gets its tasks from when it has no fixed list: `training.curriculum`."""

    def sample(self, n: int) -> list[dict[str, Any]]:
        """n tasks for the next step."""
        ...

    def update(self, task: dict[str, Any], outcomes: Sequence[float]) -> None:
        """How the task's rollouts went (1 right, 0 wrong)."""
        ...


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` folder in `output_dir`, if any."""
    ckpts = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return next((c for c in reversed(ckpts) if (c / "grpo_state.json").exists()), None)


class ResearchGRPOTrainer:
    """Online trajectory-level GRPO through the research graph, in TRL's trainer idiom.

        trainer = ResearchGRPOTrainer("local:smollm2", rewards.default(), grpo_config("out"),
                                      train_dataset=tasks, peft_config=lora_config(16))
        policy = trainer.train()

    `model` is a local spec or a `LocalChatModel` (trained in place); `reward` a `Reward` or
    a plain callable (default `rewards.default()`); `train_dataset` a list of tasks or a
    `TaskSampler` (a `training.curriculum.Curriculum`: fresh tasks every step, told how
    each group went); `sources` what the rollouts search (a `tools.corpora.Sources`, or
    `knowledge=`/`web=` keyword arguments of `research_many`; default: the cached knowledge
    base of the tasks' documents; with a sampler, a knowledge base in `output_dir/kb`; with a
    sampler, every step's task documents are added to the knowledge base). `research` configures the
    rollouts (its temperature is `args.temperature`); `per_role` gives each role its own
    group baseline; `time_budget_s` bounds the training wall time, earlier runs of a resumed
    training included: no step starts that would most likely end past it; `on_step` sees
    every step's metrics row.

    `eval_dataset` (held-out tasks: a list or a task file) is what `evaluate()` runs: one
    greedy research run per task with the current policy, searching the trainer's `sources`
    when given, else the held-out tasks' own documents (as `sleuth eval` does). With
    `args.eval_strategy="steps"` it runs every `args.eval_steps` steps (and before the first
    with `args.eval_on_start`); its row, EM, F1, knowledge F1, evidence F1, retrieval
    accuracy and the rest of `training.evaluate.METRICS` named `eval_*`, goes to
    `metrics.jsonl` after that step's row and to `on_evaluate`.

    `output_dir` receives `metrics.jsonl` (and, as `args.report_to` says, TensorBoard events
    in `runs/` and a W&B run), `curves.png`, `checkpoint-N/` every
    `args.save_steps` steps, and the final policy (loadable with `--model hf:DIR`; with LoRA
    the adapter is merged there and also kept in `adapter/`).
    """

    def __init__(self, model: str | LocalChatModel, reward: rewards.Reward | rewards.RewardFn | None,
                 args: GRPOConfig, train_dataset: Sequence[Mapping[str, Any]] | TaskSampler, *,
                 peft_config: LoraConfig | None = None, research: ResearchConfig | None = None,
                 sources: Sources | Mapping[str, Any] | None = None, per_role: bool = False,
                 time_budget_s: float | None = None,
                 on_step: Callable[[dict[str, float]], None] | None = None,
                 eval_dataset: str | Path | Sequence[Mapping[str, Any]] | None = None,
                 on_evaluate: Callable[[dict[str, float]], None] | None = None):
        if args.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {args.loss_type!r}")
        self.args = args
        self.tasks_per_step = tasks_per_step(args.per_device_train_batch_size, args.num_generations)
        self.sampler: TaskSampler | None = train_dataset if hasattr(train_dataset, "sample") else None
        self.tasks = [] if self.sampler else list({str(t["id"]): dict(t) for t in train_dataset}.values())
        if self.sampler is None and not self.tasks:
            raise ValueError("GRPO needs tasks (train_dataset is empty)")
        self.reward = rewards.as_reward(reward or rewards.default())
        self.research = (research or ResearchConfig()).model_copy(
            update={"temperature": args.temperature})
        self.sources, self.per_role = sources, per_role
        self.time_budget_s, self.on_step, self.on_evaluate = time_budget_s, on_step, on_evaluate
        self.eval_tasks = load_tasks(eval_dataset) if eval_dataset is not None else []
        self.eval_every = eval_interval(args)
        if self.eval_every and not self.eval_tasks:
            raise ValueError("eval_strategy='steps' evaluates on held-out tasks: pass eval_dataset")
        shared = {t["question"] for t in self.tasks} & {t["question"] for t in self.eval_tasks}
        if shared:
            warnings.warn(f"{len(shared)} held-out question(s) are training tasks too: their "
                          "evaluation does not measure generalisation", stacklevel=2)
        self.output_dir = Path(args.output_dir)
        self.metrics_file = self.output_dir / "metrics.jsonl"
        report_targets(args.report_to)  # a tracker named but not installed fails before loading
        self._trackers: MetricsLogger | None = None
        self.policy = load_policy(model, peft_config=peft_config)
        engine = getattr(args, "rollout_engine", "transformers")
        if engine != "transformers" and (engine, getattr(args, "rollout_engine_options", {})) != (
                self.policy.engine, self.policy.engine_options):
            self.policy.close()  # the next call starts the engine asked for
            self.policy.engine = engine
            self.policy.engine_options = dict(getattr(args, "rollout_engine_options", {}))
            self.policy.sampler  # noqa: B018 - start it now: a wrong option fails here, not mid-step
        self.ref_model = reference_model(self.policy.model) if args.beta else None
        self.optimizer, self.scheduler = self._optimizer()
        self.state = GRPOState()
        self._spent, self._started = 0.0, time.perf_counter()
        self._sources_kwargs: dict[str, Any] = {}
        self._eval_sources_kwargs: dict[str, Any] | None = None
        self._growing_kb: Any = None

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        from transformers import get_scheduler

        optimizer = torch.optim.AdamW(trainable_parameters(self.policy), lr=self.args.learning_rate,
                                      weight_decay=self.args.weight_decay)
        scheduler = get_scheduler(self.args.lr_scheduler_type, optimizer,
                                  num_warmup_steps=int(self.args.warmup_steps or 0),
                                  num_training_steps=self.args.max_steps * max(1, self.args.num_iterations))
        return optimizer, scheduler

    # ------------------------------------------------------------------ the loop

    def train(self, resume_from_checkpoint: bool | str | Path | None = None) -> LocalChatModel:
        """Train for `args.max_steps` steps (or the time budget); returns the trained policy.

        `resume_from_checkpoint`: True continues from the last checkpoint in `output_dir`
        (from scratch when there is none), a path from that checkpoint: weights, optimiser,
        scheduler, random state and the metrics logged up to it.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._start(resume_from_checkpoint)
        with (MetricsLogger(self.args.report_to, tensorboard_dir(self.output_dir, self.args),
                            run_name=self.args.run_name, config=self.args.to_dict()) as trackers,
              self._open_sources() as sources, self._open_eval_sources() as eval_sources):
            self._trackers = trackers
            self._sources_kwargs, self._eval_sources_kwargs = sources, eval_sources
            if self.sampler is not None and hasattr(sources.get("knowledge"), "ingest"):
                self._growing_kb = sources["knowledge"]  # fresh tasks bring their documents
            if self.eval_tasks and self.args.eval_on_start and self.state.step == 0:
                self.evaluate()
            while self.state.step < self.args.max_steps and not self._out_of_time():
                self._log(self._step())
                if self.eval_every and self.state.step % self.eval_every == 0:
                    self.evaluate()
                if self.args.save_steps and self.state.step % int(self.args.save_steps) == 0:
                    self._save_checkpoint()
            self._eval_sources_kwargs, self._trackers = None, None
        self.policy.weights_changed()
        if self.state.history or self.state.eval_history:
            plot_curves(self.state.rows(), self.output_dir / "curves.png")
        save_policy(self.policy, self.output_dir)
        return self.policy

    def _start(self, resume: bool | str | Path | None) -> None:
        ckpt = latest_checkpoint(self.output_dir) if resume is True else resume or None
        if ckpt is not None:
            self._load_checkpoint(Path(ckpt))
        else:
            self.state = GRPOState()
            random.seed(self.args.seed)
            torch.manual_seed(self.args.seed)
        # Rows logged after the checkpoint we resume from would be logged again: keep the
        # checkpoint's history only.
        self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in self.state.rows()))
        self._spent = (sum(r["step_s"] for r in self.state.history)  # the budget spans runs
                       + sum(r["eval_runtime"] for r in self.state.eval_history))
        self._started = time.perf_counter()

    @contextmanager
    def _open_sources(self) -> Iterator[dict[str, Any]]:
        if isinstance(self.sources, Sources):
            yield self.sources.as_kwargs()
        elif self.sources is not None:
            yield dict(self.sources)
        elif self.sampler is not None:
            from tools.knowledge import KnowledgeBase

            yield {"knowledge": KnowledgeBase(self.output_dir / "kb")}
        else:
            with open_corpus(self.tasks) as sources:
                yield sources.as_kwargs()

    @contextmanager
    def _open_eval_sources(self) -> Iterator[dict[str, Any] | None]:
        """What held-out runs search: the trainer's `sources` when given, else the held-out
        tasks' own documents; None without held-out tasks."""
        if not self.eval_tasks:
            yield None
        elif self.sources is not None:
            with self._open_sources() as sources:
                yield sources
        else:
            with open_corpus(self.eval_tasks) as sources:
                yield sources.as_kwargs()

    def _elapsed(self) -> float:
        return self._spent + time.perf_counter() - self._started

    def _out_of_time(self) -> bool:
        """Whether the next step would most likely end past the time budget."""
        if self.time_budget_s is None or not self.state.history:
            return False
        typical = statistics.median(r["step_s"] for r in self.state.history[-5:])
        if self.eval_every and self.state.eval_history and (self.state.step + 1) % self.eval_every == 0:
            typical += self.state.eval_history[-1]["eval_runtime"]  # an evaluation follows
        return self._elapsed() + typical > self.time_budget_s

    # ------------------------------------------------------------------ one step

    def _step(self) -> dict[str, float]:
        """Rollouts of this step's tasks, their scores and samples, and the update."""
        t0 = time.perf_counter()
        tasks = self._sample_tasks()
        trajectories = self._score(self._rollouts(tasks))
        self._book(tasks, trajectories)
        informative = self._informative(trajectories)
        samples = self._samples(informative)
        rollout_s = time.perf_counter() - t0
        stats = update(self.policy.model, self.optimizer, samples, self.args,
                       ref_model=self.ref_model, scheduler=self.scheduler,
                       exact_sampler=self.policy.sampler.exact)
        self.state.step += 1
        return {"step": self.state.step, **step_metrics(trajectories), **stats,
                "rollouts": len(trajectories), "samples": len(samples),
                "groups": len({t.group_id for t in trajectories}),
                "groups_informative": len({t.group_id for t in informative}),
                "rollout_s": rollout_s, "step_s": time.perf_counter() - t0,
                "lr": self.scheduler.get_last_lr()[0], "elapsed_s": self._elapsed()}

    def _sample_tasks(self) -> list[dict[str, Any]]:
        """This step's tasks: from the sampler (their documents added to the growing knowledge
        base), or drawn without replacement from the fixed list by a generator seeded by the
        step (a resumed run draws what the uninterrupted one would have)."""
        if self.sampler is not None:
            tasks = self.sampler.sample(self.tasks_per_step)
            if self._growing_kb is not None:
                self._growing_kb.ingest(corpus_of(tasks), progress=False)
            return tasks
        rng = random.Random(self.args.seed * 1_000_003 + self.state.step)
        return rng.sample(self.tasks, min(self.tasks_per_step, len(self.tasks)))

    def _book(self, tasks: Sequence[dict[str, Any]], trajectories: Sequence[Trajectory]) -> None:
        """Tell the sampler how each task's group went (exact match per rollout)."""
        if self.sampler is None:
            return
        for task in tasks:
            outcomes = [rewards.exact_match(t) for t in trajectories if t.task_id == str(task["id"])]
            self.sampler.update(task, outcomes)

    def _informative(self, trajectories: Sequence[Trajectory]) -> list[Trajectory]:
        """The rollouts of groups whose correctness varies (all of them without
        `dynamic_sampling`): in a group all right or all wrong, rewards differ by shaping only."""
        if not getattr(self.args, "dynamic_sampling", False):
            return list(trajectories)
        groups: dict[str, list[Trajectory]] = {}
        for t in trajectories:
            groups.setdefault(t.group_id or t.id, []).append(t)
        return [t for group in groups.values()
                if len({rewards.exact_match(t) for t in group}) > 1 for t in group]

    def _rollouts(self, tasks: Sequence[dict[str, Any]]) -> list[Trajectory]:
        """`num_generations` research runs per task with the current policy, all at once."""
        self.policy.weights_changed()  # the engine samples from the updated weights
        group = self.args.num_generations
        results = research_many(tasks, samples_per_task=group, concurrency=len(tasks) * group,
                                model=self.policy, **self._sources_kwargs,
                                config=self.research.model_copy(
                                    update={"seed": self.args.seed + self.state.step}))
        return sampled([r.trajectory for r in results if r.trajectory is not None])

    def _score(self, trajectories: Sequence[Trajectory]) -> list[Trajectory]:
        """Each rollout scored once (against the gold it carries), its reward recorded as a
        `TrajectoryStore` records it: `metrics["reward"]` and `metrics["reward_components"]`."""
        out = []
        for t in trajectories:
            scores = self.reward.scores(t)
            total = scores.pop("reward")
            out.append(t.model_copy(update={"metrics": {**t.metrics, "reward": total,
                                                        "reward_components": scores}}))
        return out

    def _samples(self, trajectories: Sequence[Trajectory]) -> list[Sample]:
        """One sample per model call, its advantage the trajectory's reward minus its task
        group's mean (per role with `per_role`), scaled as `args.scale_rewards` says."""
        return build_samples(trajectories, per_role=self.per_role,
                             scale_rewards=self.args.scale_rewards)

    # ------------------------------------------------------------------ held-out evaluation

    def evaluate(self) -> dict[str, float]:
        """One greedy research run per held-out task with the current policy, scored as
        `sleuth eval` scores; the row (`eval_*` means, `eval_runtime`) is logged and returned."""
        if not self.eval_tasks:
            raise ValueError("evaluate() runs the held-out tasks: pass eval_dataset")
        if self._eval_sources_kwargs is None:  # outside train()
            with self._open_eval_sources() as sources:
                return self._evaluate(sources or {})
        return self._evaluate(self._eval_sources_kwargs)

    def _evaluate(self, sources: Mapping[str, Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        self.policy.weights_changed()
        greedy = self.research.model_copy(update={"temperature": 0.0, "seed": self.args.seed})
        results = research_many(self.eval_tasks, concurrency=self.args.per_device_eval_batch_size,
                                model=self.policy, config=greedy, **sources)
        runs = [r.trajectory for r in results if r.trajectory is not None]
        row = {"step": self.state.step, **{f"eval_{k}": v for k, v in mean_scores(runs).items()},
               "eval_tasks": len(runs), "eval_failed": len(results) - len(runs),
               "eval_runtime": time.perf_counter() - t0, "elapsed_s": self._elapsed()}
        self.state.eval_history.append(row)
        self._append(row)
        if self.on_evaluate is not None:
            self.on_evaluate(row)
        return row

    # ------------------------------------------------------------------ logging, checkpoints

    def _log(self, row: dict[str, float]) -> None:
        self.state.history.append(row)
        self._append(row)
        if self.on_step is not None:
            self.on_step(row)

    def _append(self, row: dict[str, float]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._trackers is not None:  # inside train(): TensorBoard, W&B as report_to says
            self._trackers.log(row)

    def _save_checkpoint(self) -> Path:
        if self.sampler is not None and hasattr(self.sampler, "state_dict"):
            self.state.sampler = self.sampler.state_dict()
        path = save_weights(self.policy, self.output_dir / f"checkpoint-{self.state.step}")
        torch.save({"optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": random.getstate(), "torch_rng": torch.get_rng_state()},
                   path / "trainer_state.pt")
        (path / "grpo_state.json").write_text(json.dumps(dataclasses.asdict(self.state)))
        return path

    def _load_checkpoint(self, ckpt: Path) -> None:
        if not (ckpt / "grpo_state.json").exists():
            raise FileNotFoundError(f"{ckpt} is not a GRPO checkpoint (no grpo_state.json)")
        restore_weights(self.policy, ckpt)
        blob = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        if blob["scheduler"] is not None:
            self.scheduler.load_state_dict(blob["scheduler"])
        random.setstate(blob["rng"])
        torch.set_rng_state(blob["torch_rng"])
        self.state = GRPOState(**json.loads((ckpt / "grpo_state.json").read_text()))
        if self.state.sampler is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(self.state.sampler)


def plot_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """PNG curves of the reward, its components, EM, F1, knowledge F1, retrieval accuracy,
    format rate and searching over the steps, and, where `history` holds evaluation rows, the
    held-out EM, knowledge F1 and retrieval accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if not is_eval_row(h)]
    evals = [h for h in history if is_eval_row(h)]
    fig, axes = plt.subplots(1, 4 if evals else 3, figsize=(18 if evals else 14, 4))

    def curves(ax: Any, rows: Sequence[dict[str, float]], keys: Sequence[str], title: str,
               **style: Any) -> None:
        for key in keys:
            if any(key in h for h in rows):  # metrics written before a key existed lack it
                ax.plot([h["step"] for h in rows], [h.get(key, math.nan) for h in rows],
                        label=key.removeprefix("eval_").removeprefix("reward/"), **style)
        ax.set_title(title)
        if ax.get_lines():
            ax.legend(fontsize=7)

    curves(axes[0], train, sorted({k for h in train for k in h if k.startswith("reward/")}),
           "reward and components")
    curves(axes[1], train, ("em", "f1", "knowledge_f1", "retrieval_accuracy", "format_rate"),
           "answers, grounding and format")
    curves(axes[2], train, ("searches", "searches_after_miss"), "searching")
    if evals:
        curves(axes[3], evals, ("eval_em", "eval_knowledge_f1", "eval_retrieval_accuracy"),
               f"held-out, greedy ({evals[-1].get('eval_tasks', 0)} tasks)", marker="o")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_grpo(tasks: Sequence[Mapping[str, Any]], *, model: str | LocalChatModel = "local:smollm2",
               output_dir: str | Path, reward: rewards.Reward | rewards.RewardFn | None = None,
               knowledge: Any = None, web: Any = None, args: GRPOConfig | None = None,
               peft_config: LoraConfig | None = None, resume: bool = False,
               research: ResearchConfig | None = None, per_role: bool = False,
               time_budget_s: float | None = None,
               on_step: Callable[[dict[str, float]], None] | None = None,
               group_size: int | None = None, batch_tasks: int | None = None,
               steps: int | None = None, lora: bool = False, lora_r: int = 16) -> LocalChatModel:
    """`ResearchGRPOTrainer(...).train()` in one call; returns the trained policy.

    `args` defaults to `grpo_config(output_dir)`; `output_dir` replaces its folder. Kept for
    compatibility, each mapped onto a copy of `args`: `group_size` (`num_generations`),
    `batch_tasks` (tasks per step: `per_device_train_batch_size = batch_tasks * group_size`),
    `steps` (`max_steps`), `lora=True`/`lora_r` (`peft_config=lora_config(lora_r)`).
    """
    peft_config = peft_config_from(lora, lora_r, peft_config)
    args = _mapped_args(args or grpo_config(output_dir, lora=peft_config is not None),
                        output_dir=output_dir, group_size=group_size, batch_tasks=batch_tasks,
                        steps=steps)
    sources = None if knowledge is None and web is None else {"knowledge": knowledge, "web": web}
    trainer = ResearchGRPOTrainer(model, reward, args, tasks, peft_config=peft_config,
                                  research=research, sources=sources, per_role=per_role,
                                  time_budget_s=time_budget_s, on_step=on_step)
    return trainer.train(resume_from_checkpoint=resume)


def _mapped_args(args: GRPOConfig, *, output_dir: str | Path, group_size: int | None,
                 batch_tasks: int | None, steps: int | None) -> GRPOConfig:
    group = group_size or args.num_generations
    batch = batch_tasks or tasks_per_step(args.per_device_train_batch_size, args.num_generations)
    return with_changes(args, output_dir=str(output_dir), num_generations=group,
                        per_device_train_batch_size=batch * group,
                        max_steps=steps or args.max_steps)


def train_grpo_offline(trajectories: Sequence[Trajectory], *, output_dir: str | Path,
                       model: str | LocalChatModel = "local:smollm2",
                       reward: rewards.Reward | rewards.RewardFn | None = None,
                       tasks: dict[str, dict[str, Any]] | None = None,
                       peft_config: LoraConfig | None = None, per_role: bool = False,
                       epochs: int = 1, args: GRPOConfig | None = None, lora: bool = False,
                       lora_r: int = 16) -> dict[str, Any]:
    """GRPO updates from stored groups recorded by this same policy: the recorded logprobs
    are the importance-ratio denominators (clipped as online), so recorded rollouts are not
    wasted. Saves the updated policy to `output_dir` (`lora`/`lora_r` as in `train_grpo`)."""
    peft_config = peft_config_from(lora, lora_r, peft_config)
    args = args or grpo_config(output_dir, lora=peft_config is not None)
    samples = build_samples(trajectories, rewards.as_reward(reward or rewards.default()),
                            tasks=tasks, per_role=per_role)
    chat = load_policy(model, peft_config=peft_config)
    optimizer = torch.optim.AdamW(trainable_parameters(chat), lr=args.learning_rate,
                                  weight_decay=args.weight_decay)
    history = [update(chat.model, optimizer, samples, args) for _ in range(epochs)]
    save_policy(chat, output_dir)
    return {"samples": len(samples), "updates": history, "output_dir": str(output_dir)}


__all__ = ["GRPOState", "ResearchGRPOConfig", "ResearchGRPOTrainer", "TaskSampler",
           "completion_logps", "eval_interval", "grpo_config", "is_eval_row",
           "latest_checkpoint", "plot_curves", "policy_loss", "reference_model", "step_metrics",
           "tasks_per_step", "train_grpo", "train_grpo_offline", "update", "with_changes"]
