"""Rejection-sampling fine-tuning on recorded trajectories, with TRL's `SFTTrainer`.

Keep the trajectories whose reward reaches `min_reward` (recorded by any model: the local
policy's calls carry their sampled token ids; an API model's calls, recorded as text, are
tokenised with the student's chat template) and train the completion tokens of their model
calls: the dataset is pre-tokenised (`input_ids` + `labels` with -100 on every prompt token),
so TRL trains the completions only, never the prompts, tool outputs or retrieved text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from agents.models import LocalChatModel
from graph.store import TrajectoryStore
from graph.trajectory import Trajectory
from tools.device import trainer_settings
from training import rewards
from training.data import Sample, balance_roles, build_samples, to_dataset
from training.policy import is_peft, load_policy, peft_config_from, save_policy

if TYPE_CHECKING:
    from peft import LoraConfig

LEARNING_RATE = {False: 2e-5, True: 2e-4}  # full fine-tune, LoRA


class TimeBudget(TrainerCallback):
    """Stops training after the first optimiser step that ends past the wall-clock budget."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if time.perf_counter() > self.deadline:
            control.should_training_stop = True
        return control


def tokenize_untokenized(trajectories: list[Trajectory], chat: LocalChatModel) -> list[Trajectory]:
    """Give model calls recorded without token ids (an API model's) ids from `chat`'s encoding.

    Fine for supervised learning (the target is the text); RL never does this, because its
    importance ratios need the ids and logprobs that were actually sampled.
    """
    from langchain_core.messages import convert_to_messages

    out = []
    for t in trajectories:
        if all(s.completion_token_ids for s in t.model_steps):
            out.append(t)
            continue
        t = t.model_copy(deep=True)
        for s in t.model_steps:
            if s.completion_token_ids or not s.text:
                continue
            messages = convert_to_messages([(m.get("role", "human"), str(m["content"]))
                                            for m in s.prompt_messages])
            s.prompt_token_ids = chat.encode_prompt(messages)[0]  # the policy's own encoding
            s.completion_token_ids = (chat.tokenizer(s.text, add_special_tokens=False)["input_ids"]
                                      + [chat.tokenizer.eos_token_id])
        out.append(t)
    return out


def kept_samples(trajectories: TrajectoryStore | list[Trajectory], chat: LocalChatModel,
                 reward: rewards.Reward | rewards.RewardFn | None = None, *,
                 min_reward: float = 0.5, tasks: dict[str, dict[str, Any]] | None = None,
                 roles: list[str] | None = None) -> list[Sample]:
    """The model calls of the trajectories whose reward (default F1) reaches `min_reward`,
    tokenised for `chat` where they were recorded as text only."""
    samples = build_samples(tokenize_untokenized(list(trajectories), chat),
                            rewards.as_reward(reward or rewards.f1), tasks=tasks,
                            min_reward=min_reward, roles=roles)
    if not samples:
        raise ValueError(f"no model call of a trajectory with reward >= {min_reward} to train "
                         "on: lower min_reward or record more runs")
    return samples


def train_sft(trajectories: TrajectoryStore | list[Trajectory], *, output_dir: str | Path,
              model: str | LocalChatModel = "local:smollm2",
              reward: rewards.Reward | rewards.RewardFn | None = None,
              min_reward: float = 0.5, tasks: dict[str, dict[str, Any]] | None = None,
              roles: list[str] | None = None, peft_config: LoraConfig | None = None,
              epochs: float = 1.0, learning_rate: float | None = None, batch_size: int = 4,
              max_steps: int = -1, time_budget_s: float | None = None, lora: bool = False,
              lora_r: int = 16, balance: bool = False,
              report_to: str | list[str] = "none", **sft_args: Any) -> dict[str, Any]:
    """Fine-tune on the completions of high-reward trajectories; returns the training stats.

    The policy comes from `training.policy.load_policy`: LoRA with `peft_config` (e.g.
    `lora_config(16)`; `lora=True`/`lora_r` are kept for compatibility and mean the same),
    and `local:smollm2-sleuth` then continues training its shipped adapter. The trained model
    is saved to `output_dir` as a plain HF folder (loadable with `--model hf:DIR`; a LoRA
    adapter is merged there and kept in `adapter/`). With `time_budget_s`, training stops
    after the first optimiser step that ends past it; `balance` trains every role equally
    often (`training.data.balance_roles`). `report_to` is TrainingArguments' ("tensorboard",
    "wandb", "all"; TensorBoard events go to `output_dir/trainer/runs/`). Other keyword
    arguments go to TRL's `SFTConfig`.
    """
    from trl import SFTConfig, SFTTrainer

    peft_config = peft_config_from(lora, lora_r, peft_config)
    chat = load_policy(model, peft_config=peft_config)
    samples = kept_samples(trajectories, chat, reward, min_reward=min_reward, tasks=tasks,
                           roles=roles)
    n_kept = len(samples)
    if balance:
        samples = balance_roles(samples)
    out = Path(output_dir)
    # gradient checkpointing (TRL's default) only recomputes the forward of a model this small
    args = SFTConfig(output_dir=str(out / "trainer"), **trainer_settings(),
                     gradient_checkpointing=False,
                     report_to=report_to, per_device_train_batch_size=batch_size,
                     num_train_epochs=epochs, max_steps=max_steps,
                     learning_rate=learning_rate or LEARNING_RATE[is_peft(chat.model)],
                     logging_steps=1, save_strategy="no", max_length=None, **sft_args)
    trainer = SFTTrainer(model=chat.model, args=args,
                         train_dataset=to_dataset(samples).select_columns(["input_ids", "labels"]),
                         processing_class=chat.tokenizer,
                         callbacks=[TimeBudget(time_budget_s)] if time_budget_s else None)
    result = trainer.train()
    chat.model = trainer.model.eval()
    chat.close()  # the decoder must see the trained model
    save_policy(chat, out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"samples": n_kept, "trained_samples": len(samples),
            "trajectories": len({s.trajectory_id for s in samples}),
            "steps": result.global_step, "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "output_dir": str(out)}
