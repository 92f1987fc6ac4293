"""Trajectory-level GRPO: learn the research agents' behaviour from group-relative rewards.

Each step draws `batch_tasks` tasks, runs `group_size` research rollouts per task through
the same LangGraph research graph with the current policy (a `LocalChatModel` sharing the
trainer's live weights, its calls batched), scores them with a `Reward`, normalises the
rewards within each task's group (optionally per role), and takes a clipped policy-gradient
step over the completion tokens of every model call, against the logprobs recorded when the
tokens were sampled. Prompts, tool outputs and retrieved text never carry loss.

What comes from TRL, and why not its trainer: the hyperparameters are TRL's `GRPOConfig`
(learning rate, `epsilon`/`epsilon_high` clipping, `beta` KL, `loss_type`, `num_iterations`,
`temperature`, `max_grad_norm`, `save_steps`, `seed`), the per-token loss is TRL's (same
clipping, k3 KL, and `grpo`/`bnpo`/`dapo`/`dr_grpo` aggregation, see `policy_loss`), and
log-probabilities use TRL's `selective_log_softmax`. `GRPOTrainer` itself generates one
completion per prompt and buffers generation batches of fixed shape; a research rollout is
several model calls with different prompts, roles and lengths, so the rollout and the step
are ours (with `rollout_func`, TRL would see one prompt/completion pair per rollout and lose
the per-call structure). LoRA comes from PEFT, optimiser and schedule from torch/transformers.
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig
from trl.trainer.utils import selective_log_softmax

from agents.models import LocalChatModel, smollm2_folder
from graph.config import ResearchConfig
from graph.run import research_many
from graph.trajectory import Trajectory
from training import rewards
from training.data import Sample, build_samples


def grpo_config(output_dir: str | Path, **overrides: Any) -> GRPOConfig:
    """TRL's GRPOConfig with CPU-friendly defaults (fp32, no gradient checkpointing)."""
    values = {"output_dir": str(output_dir), "use_cpu": True, "bf16": False, "report_to": "none",
              "learning_rate": 5e-6, "num_generations": 4, "per_device_train_batch_size": 4,
              "temperature": 1.0, "epsilon": 0.2, "beta": 0.0, "loss_type": "dapo",
              "num_iterations": 1, "max_grad_norm": 1.0, "save_steps": 10, "max_steps": 20,
              "seed": 0, "logging_steps": 1}
    values.update(overrides)
    return GRPOConfig(**values)


# --------------------------------------------------------------------------- the loss


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                loss_type: str = "dapo", ref_logps: torch.Tensor | None = None,
                beta: float = 0.0, max_completion_length: int | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's clipped GRPO loss on padded (N, T) per-token log-probabilities.

    `advantages` is (N,); `mask` is 1 on completion tokens. Aggregation as TRL's loss types:
    grpo = mean over sequences of the per-sequence token mean; bnpo/dapo = mean over all
    tokens; dr_grpo = sum / (N * max_completion_length).
    """
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta and ref_logps is not None:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
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
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    n = len(sample.completion_ids)
    logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1, :]
    return selective_log_softmax(logits / (temperature if temperature > 0 else 1.0),
                                 torch.tensor(sample.completion_ids).unsqueeze(0)[0])


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(r.numel() for r in rows)
    out = torch.zeros((len(rows), width), dtype=rows[0].dtype)
    mask = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
        mask[i, : r.numel()] = 1
    return out, mask


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, samples: Sequence[Sample],
           args: GRPOConfig, ref_model: Any = None,
           scheduler: Any = None) -> dict[str, float]:
    """`args.num_iterations` clipped policy-gradient steps on these samples; returns stats.

    Samples are processed one at a time (CPU: no padding waste) with their gradients
    accumulated, so each optimiser step sees the loss of the whole batch, aggregated as
    `policy_loss` does. Also the path for stored groups of the same policy: the recorded
    logprobs are the importance-ratio denominators.
    """
    active = [s for s in samples if s.advantage != 0.0 or (args.beta and ref_model is not None)]
    if not active:
        return {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0, "trained_samples": 0}
    temperature = args.temperature
    old = _pad([torch.tensor(s.logprobs) for s in active])[0]
    adv = torch.tensor([s.advantage for s in active])
    ref = None
    if args.beta and ref_model is not None:
        with torch.no_grad():
            ref = _pad([completion_logps(ref_model, s, temperature) for s in active])[0]
    eps_low, eps_high = args.epsilon, args.epsilon_high if args.epsilon_high is not None else args.epsilon
    total_tokens = sum(len(s.completion_ids) for s in active)
    width = old.size(1)
    stats: dict[str, float] = {}
    model.train()
    for _ in range(max(1, args.num_iterations)):
        optimizer.zero_grad(set_to_none=True)
        loss_sum, clip_sum, kl_sum = 0.0, 0.0, 0.0
        for i, s in enumerate(active):
            lp = completion_logps(model, s, temperature)
            n = lp.numel()
            row_mask = torch.zeros(1, width)
            row = torch.cat([lp.unsqueeze(0), torch.zeros(1, width - n)], dim=1)
            row_mask[0, :n] = 1
            loss, st = policy_loss(row, old[i:i + 1], adv[i:i + 1], row_mask,
                                   epsilon_low=eps_low, epsilon_high=eps_high,
                                   loss_type="grpo" if args.loss_type == "grpo" else "bnpo",
                                   ref_logps=None if ref is None else ref[i:i + 1], beta=args.beta)
            # re-weight one sample's loss so the accumulated sum equals the batch loss
            if args.loss_type == "grpo":
                weight = 1.0 / len(active)
            elif args.loss_type == "dr_grpo":
                weight = n / (len(active) * (args.max_completion_length or width))
            else:
                weight = n / total_tokens
            (loss * weight).backward()
            loss_sum += float(loss.detach()) * weight
            clip_sum += st["clip_ratio"] * n
            kl_sum += st["kl"] * n
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        stats = {"loss": loss_sum, "clip_ratio": clip_sum / total_tokens,
                 "kl": kl_sum / total_tokens, "grad_norm": float(grad_norm),
                 "trained_samples": len(active)}
    model.eval()
    return stats


# --------------------------------------------------------------------------- the loop


@dataclass
class GRPOState:
    """What a checkpoint holds besides the weights."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class _AdapterOff:
    """Calls a PEFT model with its adapter disabled: the frozen reference for the KL term."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(**kwargs)


def _policy(model: str | LocalChatModel, lora: bool, lora_r: int) -> LocalChatModel:
    """A fresh, trainable policy (never the process-wide cached model)."""
    if isinstance(model, LocalChatModel):
        chat = model
    else:
        if model.startswith("local:"):
            path = smollm2_folder() if model == "local:smollm2" else None
            if path is None:
                raise ValueError(f"unknown local model {model!r}")
        elif model.startswith("hf:"):
            path = Path(model[3:])
        else:
            raise ValueError(f"GRPO trains local models (local:smollm2 or hf:<folder>), not {model!r}")
        chat = LocalChatModel.from_pretrained(path, model_name=f"policy:{Path(str(path)).name}")
    if lora and not hasattr(chat.model, "peft_config"):
        from peft import LoraConfig, get_peft_model

        chat.model = get_peft_model(chat.model, LoraConfig(
            r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM"))
        chat.close()  # the decoder must see the wrapped model
    return chat


def step_metrics(trajectories: Sequence[Trajectory], scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over one step's rollouts: reward, its components, EM, searches, format, tokens."""
    n = max(1, len(trajectories))
    out = {f"reward/{k}": sum(s[k] for s in scores) / n for k in scores[0]} if scores else {}
    out.update({
        "em": sum(rewards.exact_match(t) for t in trajectories) / n,
        "f1": sum(rewards.f1(t) for t in trajectories) / n,
        "searches": sum(len(rewards.searches(t)) for t in trajectories) / n,
        "searches_after_miss": sum(rewards.searches_after_miss(t) for t in trajectories) / n,
        "format_rate": sum(rewards.format_rate(t) for t in trajectories) / n,
        "model_calls": sum(len(t.model_steps) for t in trajectories) / n,
        "tokens": sum(t.metrics.get("tokens", 0) for t in trajectories) / n})
    return out


def _save(chat: LocalChatModel, path: Path, optimizer: Any, scheduler: Any, state: GRPOState) -> None:
    path.mkdir(parents=True, exist_ok=True)
    chat.model.save_pretrained(path)
    chat.tokenizer.save_pretrained(path)
    torch.save({"optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": random.getstate(), "torch_rng": torch.get_rng_state()},
               path / "trainer_state.pt")
    (path / "grpo_state.json").write_text(json.dumps({"step": state.step,
                                                      "history": state.history}))


def _latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return next((c for c in reversed(ckpts) if (c / "grpo_state.json").exists()), None)


def _restore(chat: LocalChatModel, ckpt: Path, optimizer: Any, scheduler: Any) -> GRPOState:
    if hasattr(chat.model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(chat.model, load_file(ckpt / "adapter_model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        chat.model.load_state_dict(AutoModelForCausalLM.from_pretrained(ckpt).state_dict())
    blob = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    random.setstate(blob["rng"])
    torch.set_rng_state(blob["torch_rng"])
    data = json.loads((ckpt / "grpo_state.json").read_text())
    return GRPOState(step=data["step"], history=data["history"])


def plot_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """PNG curves of the reward, its components, EM, searches after a miss and format rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key in sorted(k for k in history[0] if k.startswith("reward/")):
        axes[0].plot(steps, [h[key] for h in history], label=key.split("/", 1)[1])
    axes[0].set_title("reward and components")
    axes[0].legend(fontsize=7)
    for key in ("em", "f1", "format_rate"):
        axes[1].plot(steps, [h[key] for h in history], label=key)
    axes[1].set_title("answers and format")
    axes[1].legend(fontsize=7)
    for key in ("searches", "searches_after_miss"):
        axes[2].plot(steps, [h[key] for h in history], label=key)
    axes[2].set_title("searching")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_grpo(tasks: Sequence[dict[str, Any]], *, model: str | LocalChatModel = "local:smollm2",
               output_dir: str | Path, reward: rewards.Reward | rewards.RewardFn | None = None,
               knowledge: Any = None, web: Any = None, group_size: int = 4,
               batch_tasks: int = 2, steps: int | None = None, lora: bool = False,
               lora_r: int = 16, per_role: bool = False, resume: bool = False,
               research: ResearchConfig | None = None, args: GRPOConfig | None = None,
               time_budget_s: float | None = None,
               on_step: Callable[[dict[str, float]], None] | None = None) -> LocalChatModel:
    """Train a local policy with trajectory-level GRPO; returns the trained chat model.

    `output_dir` receives `metrics.jsonl`, `curves.png`, `checkpoint-N/` every
    `args.save_steps` steps, and the final model (loadable with `--model hf:DIR`; with LoRA
    the adapter is merged there and also kept in `adapter/`). `time_budget_s` bounds the
    total training wall time, earlier runs of a resumed training included: no step starts that
    would most likely end past it.
    """
    from transformers import get_scheduler

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = args or grpo_config(out, learning_rate=2e-4 if lora else 5e-6,
                               **({"max_steps": steps} if steps else {}))
    if steps:
        args.max_steps = steps
    if not tasks:
        raise ValueError("GRPO needs tasks")
    if knowledge is None and web is None:
        from training.evaluate import cached_kb, corpus_of

        knowledge = cached_kb(corpus_of(tasks))
    reward = rewards.as_reward(reward or rewards.default())
    chat = _policy(model, lora, lora_r)
    ref_model: Any = None
    if args.beta and lora:
        ref_model = _AdapterOff(chat.model)  # the reference is the model without its adapter
    elif args.beta:
        ref_model = copy.deepcopy(chat.model).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    params = [p for p in chat.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    total = args.max_steps * max(1, args.num_iterations)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer,
                              num_warmup_steps=int(args.warmup_steps or 0),
                              num_training_steps=total)
    state = GRPOState()
    ckpt = _latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = _restore(chat, ckpt, optimizer, scheduler)
    else:
        random.seed(args.seed)
        torch.manual_seed(args.seed)
    cfg = (research or ResearchConfig()).model_copy(update={"temperature": args.temperature})
    by_id = {t["id"]: t for t in tasks}
    order = list(by_id)
    t_start = time.perf_counter()
    metrics_file = out / "metrics.jsonl"
    # Rows logged after the checkpoint we resume from would be logged again: keep the
    # checkpoint's history only.
    metrics_file.write_text("".join(json.dumps(r) + "\n" for r in state.history))
    spent = sum(r["step_s"] for r in state.history)  # the budget covers earlier runs too
    chat.model.eval()
    while state.step < args.max_steps:
        if time_budget_s is not None and state.history:
            typical = statistics.median(r["step_s"] for r in state.history[-5:])
            if spent + time.perf_counter() - t_start + typical > time_budget_s:
                break  # the next step would most likely end past the budget
        t0 = time.perf_counter()
        rng = random.Random(args.seed * 1_000_003 + state.step)
        batch = [by_id[i] for i in rng.sample(order, min(batch_tasks, len(order)))]
        chat.batcher.prefixes.clear()  # cached prefixes were computed with older weights
        results = research_many(batch, samples_per_task=group_size,
                                concurrency=len(batch) * group_size, model=chat,
                                config=cfg.model_copy(update={"seed": args.seed + state.step}),
                                knowledge=knowledge, web=web)
        trajectories = [r.trajectory for r in results if r.trajectory is not None]
        scores = [reward.scores(t) for t in trajectories]
        samples = build_samples(trajectories, reward, per_role=per_role)
        t_roll = time.perf_counter() - t0
        stats = update(chat.model, optimizer, samples, args, ref_model=ref_model,
                       scheduler=scheduler)
        state.step += 1
        row = {"step": state.step, **step_metrics(trajectories, scores), **stats,
               "rollouts": len(trajectories), "samples": len(samples),
               "rollout_s": t_roll, "step_s": time.perf_counter() - t0,
               "lr": scheduler.get_last_lr()[0],
               "elapsed_s": spent + time.perf_counter() - t_start}
        state.history.append(row)
        with metrics_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if on_step is not None:
            on_step(row)
        if args.save_steps and state.step % int(args.save_steps) == 0:
            _save(chat, out / f"checkpoint-{state.step}", optimizer, scheduler, state)
    chat.batcher.prefixes.clear()
    if state.history:
        plot_curves(state.history, out / "curves.png")
    save_policy(chat, out)
    return chat


def train_grpo_offline(trajectories: Sequence[Trajectory], *, output_dir: str | Path,
                       model: str | LocalChatModel = "local:smollm2",
                       reward: rewards.Reward | rewards.RewardFn | None = None,
                       tasks: dict[str, dict[str, Any]] | None = None, lora: bool = False,
                       lora_r: int = 16, per_role: bool = False, epochs: int = 1,
                       args: GRPOConfig | None = None) -> dict[str, Any]:
    """GRPO updates from stored groups recorded by this same policy: the recorded logprobs
    are the importance-ratio denominators (clipped as online), so recorded rollouts are not
    wasted. Saves the updated policy to `output_dir`."""
    out = Path(output_dir)
    args = args or grpo_config(out, learning_rate=2e-4 if lora else 5e-6)
    samples = build_samples(trajectories, reward or rewards.default(), tasks=tasks,
                            per_role=per_role)
    chat = _policy(model, lora, lora_r)
    params = [p for p in chat.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    history = [update(chat.model, optimizer, samples, args) for _ in range(epochs)]
    save_policy(chat, out)
    return {"samples": len(samples), "updates": history, "output_dir": str(out)}


def save_policy(chat: LocalChatModel, path: str | Path) -> Path:
    """Save a trained policy as a plain HF folder (LoRA merged; the adapter kept in adapter/)."""
    path = Path(path)
    model = chat.model
    if hasattr(model, "peft_config"):
        model.save_pretrained(path / "adapter")
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path)
    chat.tokenizer.save_pretrained(path)
    return path


__all__ = ["grpo_config", "policy_loss", "save_policy", "train_grpo", "train_grpo_offline",
           "update"]
