"""The staged recipe: a supervised warm start, then RL — one LoRA adapter through every stage.

    chains  SFT on rationale-chain demonstrations of generated tasks (`training.rationales`):
            the agents' own prompts, the gold chain's replies; real tasks with a chain
            (`chain_extra_tasks`, e.g. MuSiQue's decompositions) demonstrated beside them;
    cml     contrastive multi-task learning (`training.cml`): the selector's yes/no judgments of
            gold pages against hard distractors, and the writer on blended evidence; the
            policy then judges passages in research runs;
    rft     rejection sampling / expert iteration: the policy's own runs of fresh generated
            tasks, sampled at a low temperature, the exactly right ones kept, SFT on them;
    grpo    trajectory-level GRPO over a curriculum of fresh generated tasks
            (`training.curriculum`), Dr. GRPO advantages and dynamic sampling.

Each stage continues the previous stage's adapter in memory and saves it to
`output_dir/<stage>/` (a plain HF folder, loadable with `hf:DIR`, the adapter in `adapter/`);
a finished stage is not run again (its adapter is loaded back), so an interrupted pipeline
resumes at the stage it was in (GRPO from its last checkpoint). Each stage has its own
wall-clock budget. Training worlds use seeds from `first_seed` on: keep them clear of any
held-out world. With `prompt_examples=False` (the default) the policy is trained, and later
run, on prompts without the worked examples: it learns the formats from the demonstrations,
and every call is a few hundred tokens shorter.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agents.models import LocalChatModel, policy_settings
from agents.prompting import load_template
from graph.config import ROLES, ResearchConfig
from graph.run import research_many
from tools.corpora import cached_kb, corpus_of
from training import rewards
from training.cml import train_cml
from training.curriculum import Curriculum
from training.grpo import ResearchGRPOConfig, ResearchGRPOTrainer, grpo_config
from training.policy import load_policy, lora_config, restore_weights, top_layers, training_only_layers
from training.rationales import demonstrations, with_rationale
from training.sft import train_sft

STAGES = ("chains", "cml", "rft", "grpo")


@dataclass
class PipelineConfig:
    """What the pipeline trains, how long each stage may run, and on what."""

    output_dir: str
    model: str | LocalChatModel = "local:smollm2"
    stages: tuple[str, ...] = ("chains", "grpo")
    minutes: dict[str, float] = field(default_factory=lambda: {"chains": 25.0, "cml": 10.0,
                                                               "rft": 15.0, "grpo": 35.0})
    lora_r: int = 8
    lora_layers: int | None = None  # LoRA on the top N decoder layers only (a shorter backward)
    prompt_examples: bool = False
    research: ResearchConfig = field(default_factory=lambda: ResearchConfig(
        max_rounds=3, max_attempts=2, max_new_tokens=96))
    chain_tasks: int = 400
    cml_tasks: int = 200
    # role -> prompt file to train (and later run) that role on, e.g. {"writer":
    # agents.writer.REASONED, "planner": agents.planner.REASONED}: the facts first
    prompts: dict[str, str] = field(default_factory=dict)
    balance_roles: bool = False  # chains: every role as often as the commonest
    cml_extra_tasks: list[dict[str, Any]] = field(default_factory=list)  # e.g. a task file's rows
    # chains: real tasks demonstrated beside the generated ones, on their own documents; each
    # with a rationale, a MuSiQue decomposition or 2Wiki evidences (`rationales.with_rationale`)
    chain_extra_tasks: list[dict[str, Any]] = field(default_factory=list)
    rft_tasks: int = 48
    rft_temperature: float = 0.3
    first_seed: int = 1_000_000
    grpo: dict[str, Any] = field(default_factory=lambda: {
        "learning_rate": 1e-4, "temperature": 0.7, "num_generations": 4,
        "per_device_train_batch_size": 8, "max_steps": 200, "save_steps": 2})
    seed: int = 0
    reward: str = "default"  # the GRPO stage's reward mix (`training.rewards.mix`): or "grounded"
    balance_kinds: bool = True  # GRPO's curriculum: bridges and comparisons equally often
    # GRPO trains the adapter of the top N decoder layers only: the layers below keep the warm
    # start's weights and the update's backward pass stops above them (a faster step)
    grpo_layers: int | None = None

    def __post_init__(self) -> None:
        rewards.mix(self.reward)  # an unknown mix fails now, not after a stage
        _check_grpo_names(self.grpo)
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}: the stages are {', '.join(STAGES)}")
        for role, prompt in self.prompts.items():  # a wrong name fails now, not after a stage
            if role not in ROLES:
                raise ValueError(f"prompts: unknown role {role!r}; the roles are {', '.join(ROLES)}")
            load_template(prompt)
        if self.grpo_layers is not None and "grpo" in self.stages:
            top_layers(self.model, self.grpo_layers)  # out of range fails now, not after a stage


def grpo_settings(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs naming `ResearchGRPOConfig` fields (TRL's `GRPOConfig` names, e.g.
    learning_rate=2e-5 or beta=0.04) as a dict for `PipelineConfig.grpo`; values parsed as JSON
    where they are JSON (numbers, true/false), else kept as text."""
    settings: dict[str, Any] = {}
    for key, text in _pairs(pairs, "--grpo takes KEY=VALUE, e.g. learning_rate=2e-5"):
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text
    _check_grpo_names(settings)
    return settings


def _check_grpo_names(settings: dict[str, Any]) -> None:
    known = {f.name for f in fields(ResearchGRPOConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"grpo: {', '.join(unknown)} not a GRPO setting (ResearchGRPOConfig, "
                         "TRL's GRPOConfig names, e.g. learning_rate, beta, temperature)")


def role_prompts(pairs: list[str]) -> dict[str, str]:
    """`ROLE=PROMPT` pairs (the command-line form of `PipelineConfig.prompts`) as a dict."""
    return dict(_pairs(pairs, "--prompt takes ROLE=PROMPT, e.g. writer=writer_reasoned"))


def _pairs(pairs: list[str], usage: str) -> list[tuple[str, str]]:
    """`A=B` command-line pairs split at their first `=`; `usage` names the form when one lacks it."""
    if any("=" not in p for p in pairs):
        raise ValueError(f"{usage}, not {pairs!r}")
    return [tuple(p.split("=", 1)) for p in pairs]


Log = Callable[[str], None]


def run_pipeline(cfg: PipelineConfig, log: Log = print) -> dict[str, Any]:
    """Run the configured stages in order; returns each stage's record (also written to
    `output_dir/pipeline.json`)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = top_layers(cfg.model, cfg.lora_layers) if cfg.lora_layers else None
    chat = load_policy(cfg.model, peft_config=lora_config(cfg.lora_r, layers))
    chat.prompt_examples = cfg.prompt_examples
    if cfg.prompts:  # the chains' reply formats, recorded in the policy's card
        chat.prompts = {**chat.prompts, **cfg.prompts}
    records: dict[str, Any] = {}
    for stage in cfg.stages:
        folder = out / stage
        record_file = folder / "stage.json"
        if record_file.exists():
            log(f"{stage}: done earlier, loading its adapter")
            restore_weights(chat, folder / "adapter")  # the stage's adapter, into the live one
            card = policy_settings(folder)
            chat.judges_passages, chat.prompts = card["judges_passages"], card["prompts"]
            records[stage] = json.loads(record_file.read_text())
            continue
        t0 = time.perf_counter()
        log(f"{stage}: up to {cfg.minutes.get(stage, 0):g} minutes")
        record = {"chains": _chains, "cml": _cml, "rft": _rft,
                  "grpo": _grpo}[stage](chat, cfg, folder, log)
        record.update(stage=stage, minutes=round((time.perf_counter() - t0) / 60, 2),
                      checkpoint=f"hf:{folder}")
        record_file.write_text(json.dumps(record, indent=1) + "\n")
        records[stage] = record
    config = {**{f.name: getattr(cfg, f.name) for f in fields(cfg)
                 if f.name not in ("model", "research", "cml_extra_tasks", "chain_extra_tasks")},
              "cml_extra_tasks": len(cfg.cml_extra_tasks),
              "chain_extra_tasks": len(cfg.chain_extra_tasks),
              "model": cfg.model if isinstance(cfg.model, str) else cfg.model.model_name,
              "research": cfg.research.model_dump(mode="json")}
    (out / "pipeline.json").write_text(json.dumps({"config": config, "stages": records},
                                                  indent=1) + "\n")
    return records


def _training_tasks(cfg: PipelineConfig, n: int, offset: int) -> list[dict[str, Any]]:
    """n fresh generated tasks from every curriculum level, seeds from first_seed + offset."""
    curriculum = Curriculum(first_seed=cfg.first_seed + offset, seed=cfg.seed + offset)
    levels = list(curriculum.levels)
    tasks = [curriculum.draw(levels[i % len(levels)]) for i in range(n)]
    random.Random(cfg.seed).shuffle(tasks)
    return tasks


def _chains(chat: LocalChatModel, cfg: PipelineConfig, folder: Path, log: Log) -> dict[str, Any]:
    """SFT on the teacher's rationale-chain runs of fresh generated tasks."""
    tasks = _training_tasks(cfg, cfg.chain_tasks, offset=0)
    config = cfg.research.model_copy(update={"temperature": 0.0,
                                             "prompt_examples": cfg.prompt_examples})
    demos = demonstrations(tasks, knowledge=cached_kb(corpus_of(tasks)), config=config,
                           prompts=chat.prompts)
    log(f"chains: {len(demos)} right demonstrations of {len(tasks)} tasks")
    if not demos:
        raise ValueError(f"no demonstration of {len(tasks)} tasks was right: with max_rounds="
                         f"{cfg.research.max_rounds} a chain of more hops cannot be played out")
    extra = _extra_chain_tasks(cfg.chain_extra_tasks)
    extra_demos = []
    for rows in extra.values():  # each source searched in a knowledge base of its own documents
        extra_demos += demonstrations(rows, knowledge=cached_kb(corpus_of(rows)), config=config,
                                      prompts=chat.prompts)
    record = {"tasks": len(tasks), "demonstrations": len(demos)}
    if cfg.chain_extra_tasks:
        n = sum(len(rows) for rows in extra.values())
        log(f"chains: {len(extra_demos)} right demonstrations of {n} real tasks with a chain "
            f"({len(cfg.chain_extra_tasks) - n} of {len(cfg.chain_extra_tasks)} had none)")
        record.update(extra_tasks=len(cfg.chain_extra_tasks), extra_chains=n,
                      extra_demonstrations=len(extra_demos))
    demos += extra_demos
    stats = train_sft(demos, model=chat, reward=rewards.exact_match, min_reward=1.0,
                      output_dir=folder, epochs=3, time_budget_s=60 * cfg.minutes.get("chains", 0),
                      balance=cfg.balance_roles,
                      train_sampling_strategy="group_by_length")  # batches of like lengths: less padding
    return {**record, **_sft_stats(stats)}


def _extra_chain_tasks(tasks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The real tasks that carry a chain (their own, or one built from a decomposition or
    evidence triples), by source."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        row = with_rationale(t)
        if row is not None:
            by_source.setdefault(str(row.get("source")), []).append(row)
    return by_source


def _cml(chat: LocalChatModel, cfg: PipelineConfig, folder: Path, log: Log) -> dict[str, Any]:
    """The selector's judgments and the writer on blended evidence, on fresh generated tasks
    (and `cml_extra_tasks`), hard distractors from each dataset's own knowledge base."""
    generated = _training_tasks(cfg, cfg.cml_tasks, offset=200_000)
    extra: dict[str, list[dict[str, Any]]] = {}  # by source: a dataset's own distractors
    for t in cfg.cml_extra_tasks:
        extra.setdefault(str(t.get("source")), []).append(t)
    world_kb = cached_kb(corpus_of(generated))
    kbs = {**{str(t.get("source")): world_kb for t in generated},
           **{source: cached_kb(corpus_of(rows)) for source, rows in extra.items()}}
    tasks = generated + list(cfg.cml_extra_tasks)
    stats = train_cml(tasks, model=chat, knowledge=kbs,
                      output_dir=folder, time_budget_s=60 * cfg.minutes.get("cml", 0),
                      seed=cfg.seed, log=log)
    return {"tasks": len(tasks), **{k: stats[k] for k in ("groups", "steps", "first_loss",
                                                          "last_loss")}}


def _rft(chat: LocalChatModel, cfg: PipelineConfig, folder: Path, log: Log) -> dict[str, Any]:
    """Expert iteration: sample the policy on fresh tasks, SFT on its exactly right runs."""
    budget = 60 * cfg.minutes.get("rft", 0)
    t0 = time.perf_counter()
    tasks = _training_tasks(cfg, cfg.rft_tasks, offset=100_000)
    config = cfg.research.model_copy(update={"temperature": cfg.rft_temperature,
                                             "seed": cfg.seed})
    results = research_many(tasks, samples_per_task=4, concurrency=8, model=chat,
                            knowledge=cached_kb(corpus_of(tasks)), config=config)
    right = [r.trajectory for r in results
             if r.trajectory is not None and rewards.exact_match(r.trajectory) == 1.0]
    log(f"rft: {len(right)} of {len(results)} sampled runs exactly right")
    if not right:
        return {"sampled": len(results), "right": 0, "trained": False}
    stats = train_sft(right, model=chat, reward=rewards.exact_match, min_reward=1.0,
                      output_dir=folder, epochs=2,
                      time_budget_s=max(60.0, budget - (time.perf_counter() - t0)))
    return {"sampled": len(results), "right": len(right), **_sft_stats(stats)}


def _grpo(chat: LocalChatModel, cfg: PipelineConfig, folder: Path, log: Log) -> dict[str, Any]:
    """GRPO over a curriculum of fresh tasks, continuing the adapter."""
    curriculum = Curriculum(first_seed=cfg.first_seed + 200_000, seed=cfg.seed,
                            balance_kinds=cfg.balance_kinds)
    args = grpo_config(folder, lora=True, seed=cfg.seed, **cfg.grpo)
    with training_only_layers(chat, top_layers(chat, cfg.grpo_layers)) if cfg.grpo_layers else nullcontext():
        trainer = ResearchGRPOTrainer(
            chat, rewards.mix(cfg.reward), args, train_dataset=curriculum,
            research=cfg.research.model_copy(update={"prompt_examples": None}),
            time_budget_s=60 * cfg.minutes.get("grpo", 0),
            on_step=lambda r: log(f"grpo step {r['step']}: reward {r['reward/reward']:.3f} "
                                  f"em {r['em']:.2f} informative groups {r['groups_informative']}"))
        trainer.train(resume_from_checkpoint=True)
    history = trainer.state.history
    return {"steps": len(history), "train_s": history[-1]["elapsed_s"] if history else 0.0,
            "rollouts": sum(r["rollouts"] for r in history),
            "informative_groups": sum(r["groups_informative"] for r in history),
            "groups": sum(r["groups"] for r in history), "curriculum": curriculum.state(),
            "train_em_first5": _mean(history[:5], "em"), "train_em_last5": _mean(history[-5:], "em")}


def _sft_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("samples", "trajectories", "steps", "first_loss", "last_loss")}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    return round(sum(r[key] for r in rows) / len(rows), 4) if rows else None


__all__ = ["STAGES", "PipelineConfig", "grpo_settings", "role_prompts", "run_pipeline"]
