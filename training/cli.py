"""`sleuth eval` and `sleuth train`: joined to the `sleuth` app by `register`.

This module imports only typer, rich and graph/console.py at import time, so mounting it
costs nothing; the evaluation code (and torch) loads when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from graph.console import (
    RoleModel,
    err,
    folder,
    knowledge_base,
    out,
    role_models,
    writable_file,
    writable_folder,
)
from graph.console import fail as _fail


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['tasks']} ({result['n_tasks']} tasks)")
    for col in ("run", "type", "n", "EM", "F1", "KF1", "evid F1", "retrieval", "cite prec",
                "format", "searches", "after miss", "calls", "tokens", "s/task"):
        table.add_column(col, justify="right" if col not in ("run", "type") else "left")
    for name, run in result["runs"].items():
        rows = [*run["by_type"].items(), ("all", {**run["overall"], "n": len(run["per_task"])})]
        for typ, m in rows:
            table.add_row(name, typ, str(m.get("n", "")), f"{100 * m['em']:.1f}",
                          f"{100 * m['f1']:.1f}", f"{100 * m['knowledge_f1']:.1f}",
                          f"{m['evidence_f1']:.2f}", f"{m['retrieval_accuracy']:.2f}",
                          f"{m['citation_precision']:.2f}", f"{m['format_rate']:.2f}",
                          f"{m['searches']:.1f}", f"{m['searches_after_miss']:.1f}",
                          f"{m['model_calls']:.1f}", f"{m['tokens']:.0f}", f"{m['seconds']:.1f}")
    return table


def _local_engine(engine: str) -> str:
    """`engine` when it decodes in this process; else a clear error."""
    from agents.engines import LOCAL_ENGINES

    if engine not in LOCAL_ENGINES:
        raise ValueError(f"--engine is {' or '.join(LOCAL_ENGINES)}, not {engine!r}")
    return engine


def _engine_model(spec: str, engine: str) -> Any:
    """A local model spec loaded to decode with another engine."""
    from agents import load_chat_model
    from agents.models import parse_spec

    _local_engine(engine)  # a served model is an `openai:` spec here
    if not parse_spec(spec).is_local:
        raise ValueError(f"--engine {engine} needs a local model, not {spec}")
    return load_chat_model(spec, engine=engine)


def eval_command(
    tasks: Annotated[Path, typer.Argument(help="Task JSONL (../shared/data format or `sleuth world`).")],
    out_path: Annotated[Path, typer.Option("--out", help="Result JSON (a PNG is written beside).",
                                           callback=writable_file)],
    model: Annotated[str, typer.Option(help="Model spec.")] = "local:smollm2",
    limit: Annotated[int | None, typer.Option(help="First N tasks.")] = None,
    concurrency: Annotated[int, typer.Option(help="Runs at once.")] = 4,
    samples: Annotated[int, typer.Option(help="Runs per task.")] = 1,
    backend: Annotated[str, typer.Option(help="kb (LanceDB) or web (corpus server / --search-url).")] = "kb",
    search_url: Annotated[str | None, typer.Option(help="SearXNG URL for tasks without docs.")] = None,
    kb: Annotated[str | None, typer.Option(
        "--kb", help="Knowledge-base folder or LanceDB URI to search (built from the tasks' docs "
        "if absent; default: a cache per corpus).", callback=knowledge_base)] = None,
    mode: Annotated[str, typer.Option(help="graph, retrieval (no model), oracle (gold evidence).")] = "graph",
    record: Annotated[Path | None, typer.Option(help="Keep the trajectories in this store.",
                                                callback=writable_folder)] = None,
    max_rounds: Annotated[int, typer.Option(help="Research rounds.")] = 3,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Base seed.")] = 0,
    engine: Annotated[str, typer.Option(
        help="What decodes a local model: transformers (exact) or ct2-int8 (CTranslate2).")] = "transformers",
    model_planner: RoleModel = None,
    model_searcher: RoleModel = None,
    model_selector: RoleModel = None,
    model_writer: RoleModel = None,
) -> None:
    """Run the research graph on a task file and score it (EM, F1, evidence, searches...)."""
    from rich.progress import Progress

    from graph.config import ResearchConfig
    from training.evaluate import evaluate, write

    if backend not in ("kb", "web") or mode not in ("graph", "retrieval", "oracle"):
        _fail("--backend is kb or web; --mode is graph, retrieval or oracle")
    cfg = ResearchConfig(model=model, max_rounds=max_rounds, temperature=temperature, seed=seed,
                         models=role_models(model_planner, model_searcher, model_selector,
                                            model_writer))
    chat = model if engine == "transformers" else _engine_model(model, engine)
    # a bar only on a terminal, and gone when done: an error leaves its one line alone
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        bar = progress.add_task(f"eval {mode}", total=None)
        result = evaluate(tasks, model=chat, limit=limit, concurrency=concurrency,
                          samples=samples, backend=backend, search_url=search_url,  # type: ignore[arg-type]
                          kb=kb, record=record, mode=mode, config=cfg,  # type: ignore[arg-type]
                          progress=lambda r: progress.advance(bar))
    json_path, png = write(result, out_path)
    out.print(_table(result))
    err.print(f"wrote {json_path} and {png}", soft_wrap=True)
    sys.stdout.flush()


train_app = typer.Typer(help="Train a local policy on research trajectories.", no_args_is_help=True)
MODEL_HELP = "local:smollm2, local:smollm2-sleuth (continues its adapter with --lora) or hf:<folder>."
REPORT_TO_HELP = ("Also log the metrics to these trackers, comma-separated (TrainingArguments' "
                  "report_to): tensorboard (events in OUTPUT/runs/), wandb, all or none.")
ENGINE_HELP = ("What samples the rollouts: transformers (in-process, exact), ct2-int8 (CTranslate2 "
               "int8 on the CPU) or openai (a vLLM server: --engine-url, --served-model).")


def _grpo_tasks(tasks: Path | None, world_seed: int | None, curriculum: bool, world_tasks: int,
                seed: int) -> Any:
    """The task file's rows, a generated world's tasks, or a curriculum of fresh ones."""
    from tools.documents import read_tasks
    from tools.worlds import generate_world
    from training.curriculum import Curriculum

    if (tasks is not None) + (world_seed is not None) + curriculum != 1:
        raise ValueError("choose the training tasks: --tasks FILE, --world-seed N or --curriculum")
    if tasks is not None:
        return read_tasks(tasks)
    if world_seed is not None:
        return generate_world(world_seed, world_tasks).tasks
    return Curriculum(seed=seed)


def _heldout_tasks(eval_tasks: Path | None, eval_size: int, world_seed: int | None) -> Any:
    """What --eval-every answers: the first `eval_size` tasks of the file given, else of the
    generated held-out world (never trained on)."""
    from tools.documents import read_tasks
    from tools.worlds import generate_world
    from training.evaluate import HELDOUT_WORLD_SEED

    if eval_tasks is not None:
        return read_tasks(eval_tasks, eval_size)
    if world_seed == HELDOUT_WORLD_SEED:
        raise ValueError(f"world {HELDOUT_WORLD_SEED} is the held-out world --eval-every answers: "
                         "train on another --world-seed or pass --eval-tasks FILE")
    return generate_world(HELDOUT_WORLD_SEED, eval_size).tasks


@train_app.command("grpo")
def grpo_command(
    output: Annotated[Path, typer.Option("--output", help="Output folder (checkpoints, metrics, model).",
                                         callback=writable_folder)],
    tasks: Annotated[Path | None, typer.Option("--tasks", help="Task JSONL to train on.")] = None,
    world_seed: Annotated[int | None, typer.Option("--world-seed", help="Train on world N.")] = None,
    world_tasks: Annotated[int, typer.Option(help="Tasks in the generated world.")] = 200,
    curriculum: Annotated[bool, typer.Option(
        "--curriculum", help="Fresh generated tasks every step, drawn where success is neither "
        "0 nor 1 (instead of --tasks / --world-seed).")] = False,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "local:smollm2",
    lora: Annotated[bool, typer.Option(help="Train a LoRA adapter (PEFT).")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    steps: Annotated[int, typer.Option(help="GRPO steps (max_steps).")] = 20,
    group_size: Annotated[int, typer.Option(help="Rollouts per task (G, num_generations).")] = 4,
    batch_tasks: Annotated[int, typer.Option(help="Tasks per step (B; batch = B x G rollouts).")] = 2,
    learning_rate: Annotated[float | None, typer.Option(help="Default 5e-6 (2e-4 with --lora).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of rollouts.")] = 1.0,
    beta: Annotated[float, typer.Option(help="KL coefficient to the start policy.")] = 0.0,
    iterations: Annotated[int, typer.Option(help="Updates per batch of rollouts.")] = 1,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 10,
    per_role: Annotated[bool, typer.Option(help="Group baselines per role.")] = False,
    scale_rewards: Annotated[str, typer.Option(
        help="Divide advantages by the group's std (group), the batch's (batch), or not (none: "
             "Dr. GRPO).")] = "none",
    dynamic_sampling: Annotated[bool, typer.Option(
        help="Drop groups whose rollouts are all right or all wrong.")] = True,
    max_rounds: Annotated[int, typer.Option(help="Research rounds per rollout.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "transformers",
    engine_url: Annotated[str | None, typer.Option(
        help="With --engine openai: the server's base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    served_model: Annotated[str | None, typer.Option(
        help="With --engine openai: the base model's name on the server.")] = None,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", help="Every N steps, answer held-out tasks greedily and log their EM, "
        "knowledge F1 and retrieval accuracy (0: never).")] = 0,
    eval_tasks: Annotated[Path | None, typer.Option(
        "--eval-tasks", help="Held-out task JSONL for --eval-every (default: the generated "
        "world of seed 2, never trained on).")] = None,
    eval_size: Annotated[int, typer.Option(help="Held-out tasks per evaluation (the first N).")] = 20,
    report_to: Annotated[str, typer.Option("--report-to", help=REPORT_TO_HELP)] = "none",
) -> None:
    """Online trajectory-level GRPO through the research graph."""
    from rich.progress import Progress

    from graph.config import ResearchConfig
    from training.grpo import ResearchGRPOTrainer, grpo_config
    from training.policy import lora_config

    rows = _grpo_tasks(tasks, world_seed, curriculum, world_tasks, seed)
    if eval_every < 0 or eval_size < 1:
        raise ValueError("--eval-every is 0 (never) or more; --eval-size at least 1")
    heldout = _heldout_tasks(eval_tasks, eval_size, world_seed) if eval_every else None
    research = ResearchConfig(max_rounds=max_rounds)
    args = grpo_config(output, lora=lora, max_steps=steps, save_steps=save_steps, seed=seed,
                       num_generations=group_size,
                       per_device_train_batch_size=batch_tasks * group_size,
                       temperature=temperature, beta=beta, num_iterations=iterations,
                       scale_rewards=scale_rewards, dynamic_sampling=dynamic_sampling,
                       rollout_engine=engine, rollout_engine_options=_server(engine_url, served_model),
                       eval_strategy="steps" if eval_every else "no", eval_steps=eval_every or None,
                       report_to=_trackers(report_to),
                       **({"learning_rate": learning_rate} if learning_rate else {}))
    with Progress(console=err) as progress:
        trainer = ResearchGRPOTrainer(model, None, args, rows, per_role=per_role,
                                      peft_config=lora_config(lora_r) if lora else None,
                                      research=research, on_step=_step_bar(progress, steps),
                                      eval_dataset=heldout, on_evaluate=_eval_line)
        trainer.train(resume_from_checkpoint=resume)
    err.print(f"trained policy in {output} (use --model hf:{output}); metrics in "
              f"{output / 'metrics.jsonl'}{' (held-out rows: eval_*)' if eval_every else ''}, "
              f"curves in {output / 'curves.png'}", soft_wrap=True)


def _trackers(report_to: str) -> list[str]:
    """`--report-to tensorboard,wandb` as TrainingArguments' `report_to` list."""
    return [name.strip() for name in report_to.split(",") if name.strip()] or ["none"]


def _server(url: str | None, served_model: str | None) -> dict[str, str]:
    """The openai engine's options given on the command line."""
    return {k: v for k, v in (("base_url", url), ("served_model", served_model)) if v}


def _eval_line(row: dict[str, Any]) -> None:
    """One line per held-out evaluation."""
    err.print(f"eval step {row['step']}: EM {row.get('eval_em', 0.0):.2f}, knowledge F1 "
              f"{row.get('eval_knowledge_f1', 0.0):.2f}, retrieval accuracy "
              f"{row.get('eval_retrieval_accuracy', 0.0):.2f} ({row['eval_tasks']} tasks, "
              f"{row['eval_runtime']:.0f} s)", highlight=False)


def _step_bar(progress: Any, steps: int) -> Any:
    """A progress bar of GRPO steps, showing the last step's reward and EM."""
    bar = progress.add_task("grpo", total=steps)

    def show(row: dict[str, Any]) -> None:
        progress.update(bar, completed=row["step"], description=(
            f"grpo reward {row['reward/reward']:.3f} em {row['em']:.2f}"))
    return show


@train_app.command("sft")
def sft_command(
    trajectories: Annotated[Path, typer.Option("--trajectories", help="Trajectory store folder.",
                                               callback=folder)],
    output: Annotated[Path, typer.Option("--output", help="Output folder.", callback=writable_folder)],
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "local:smollm2",
    min_reward: Annotated[float, typer.Option(help="Keep trajectories with F1 >= this.")] = 0.5,
    lora: Annotated[bool, typer.Option(help="Train a LoRA adapter (PEFT).")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    epochs: Annotated[float, typer.Option(help="Epochs over the kept completions.")] = 1.0,
    learning_rate: Annotated[float | None, typer.Option(help="Default 2e-5 (2e-4 with --lora).")] = None,
    report_to: Annotated[str, typer.Option("--report-to", help=REPORT_TO_HELP.replace(
        "OUTPUT/runs/", "OUTPUT/trainer/runs/"))] = "none",
) -> None:
    """Rejection-sampling fine-tuning on recorded trajectories (completion tokens only)."""
    from graph.store import TrajectoryStore
    from training.policy import lora_config
    from training.sft import train_sft

    if not (trajectories / "trajectories.jsonl").exists():
        _fail(f"no trajectory store at {trajectories} (record one with `sleuth record`)")
    stats = train_sft(TrajectoryStore(trajectories), output_dir=output, model=model,
                      min_reward=min_reward, epochs=epochs, learning_rate=learning_rate,
                      peft_config=lora_config(lora_r) if lora else None,
                      report_to=_trackers(report_to))
    err.print(f"trained on {stats['samples']} completions of {stats['trajectories']} "
              f"trajectories, loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f}; "
              f"policy in {output} (use --model hf:{output})", soft_wrap=True)


@train_app.command("cml")
def cml_command(
    tasks: Annotated[list[Path], typer.Argument(help="Task JSONL files whose docs carry gold flags.")],
    output: Annotated[Path, typer.Option("--output", help="Output folder.", callback=writable_folder)],
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "local:smollm2",
    kb: Annotated[str | None, typer.Option(
        "--kb", help="Knowledge base (folder or LanceDB URI) for hard distractors (default: the "
        "tasks' own documents).", callback=knowledge_base)] = None,
    distractors: Annotated[int, typer.Option("-k", help="Distractors per gold passage.")] = 4,
    limit: Annotated[int | None, typer.Option(help="First N tasks of each file.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Wall-clock budget.")] = None,
    max_steps: Annotated[int, typer.Option(help="Steps (-1: one pass, or the budget).")] = -1,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank (0: full fine-tune).")] = 8,
    learning_rate: Annotated[float | None, typer.Option(help="Default 2e-4 (LoRA).")] = None,
    report_to: Annotated[str, typer.Option("--report-to", help=REPORT_TO_HELP)] = "none",
) -> None:
    """Contrastive multi-task learning: the selector's passage judgments and the writer on
    blended evidence; the policy then judges passages in research runs."""
    from tools.corpora import cached_kb, corpus_of
    from tools.documents import read_tasks
    from tools.knowledge import KnowledgeBase
    from training.cml import train_cml
    from training.policy import lora_config

    if isinstance(kb, Path) and not kb.exists():
        _fail(f"no knowledge base at {kb}: create one with `sleuth ingest PATH --kb {kb}`")
    rows = [t for path in tasks for t in read_tasks(path, limit)]
    knowledge = KnowledgeBase(kb) if kb is not None else cached_kb(corpus_of(rows))
    stats = train_cml(rows, output_dir=output, model=model, knowledge=knowledge, k=distractors,
                      peft_config=lora_config(lora_r) if lora_r else None, max_steps=max_steps,
                      time_budget_s=60 * minutes if minutes else None,
                      learning_rate=learning_rate, report_to=_trackers(report_to))
    err.print(f"trained on {stats['groups']} groups in {stats['steps']} steps, loss "
              f"{stats['first_loss']:.3f} -> {stats['last_loss']:.3f}; policy in {output} "
              f"(use --model hf:{output}: it judges passages by default)", soft_wrap=True)


def _minutes(text: str) -> dict[str, float]:
    """`chains=25,grpo=35` as {stage: minutes}."""
    try:
        return {k.strip(): float(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}
    except ValueError:
        _fail(f"--minutes takes stage=minutes pairs, e.g. chains=25,grpo=35, not {text!r}")


@train_app.command("pipeline")
def pipeline_command(
    output: Annotated[Path, typer.Option("--output", help="Output folder (a folder per stage).",
                                         callback=writable_folder)],
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "local:smollm2",
    stages: Annotated[str, typer.Option(help="Stages in order: chains, cml, rft, grpo.")] = "chains,grpo",
    minutes: Annotated[str, typer.Option(help="Wall-clock budget per stage.")] = "chains=25,grpo=35",
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 8,
    lora_layers: Annotated[int | None, typer.Option(
        "--lora-layers", help="LoRA on the top N decoder layers only (faster updates).")] = None,
    grpo_layers: Annotated[int | None, typer.Option(
        "--grpo-layers", help="GRPO trains the adapter of the top N decoder layers only; the "
        "warm start's adapter below stays as it is (faster steps).")] = None,
    prompt_examples: Annotated[bool, typer.Option(
        help="Train (and later run) with the prompts' worked examples.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    prompt: Annotated[list[str] | None, typer.Option(
        "--prompt", help="ROLE=PROMPT: train (and later run) a role on another prompt file, e.g. "
        "writer=writer_reasoned or planner=planner_reasoned (the facts first); repeatable.")] = None,
    balance_roles: Annotated[bool, typer.Option(
        help="Chains: train every role as often as the commonest.")] = False,
    engine: Annotated[str, typer.Option(
        help="What samples the GRPO stage's rollouts: transformers or ct2-int8.")] = "transformers",
    reward: Annotated[str, typer.Option(
        help="The GRPO stage's reward mix: default, or grounded (correctness paid in proportion "
        "to the gold evidence retrieved).")] = "default",
    chain_tasks: Annotated[list[Path] | None, typer.Option(
        "--chain-tasks", help="A task file (JSONL) of real questions with their documents and, in "
        "meta, a rationale, a MuSiQue question_decomposition or 2Wiki evidences: demonstrated in "
        "the chains stage beside the generated tasks (repeatable).")] = None,
    grpo: Annotated[list[str] | None, typer.Option(
        "--grpo", help="KEY=VALUE: a GRPO stage setting by its GRPOConfig name, e.g. "
        "learning_rate=2e-5 or beta=0.04 (repeatable).")] = None,
) -> None:
    """The staged recipe: SFT on rationale chains, (CML, rejection sampling,) GRPO on a curriculum."""
    from tools.documents import read_tasks
    from training.pipeline import PipelineConfig, grpo_settings, role_prompts, run_pipeline

    try:
        settings = grpo_settings(grpo or [])
    except ValueError as e:
        _fail(str(e))
    cfg = PipelineConfig(output_dir=str(output), model=model,
                         stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
                         minutes=_minutes(minutes), lora_r=lora_r, lora_layers=lora_layers,
                         grpo_layers=grpo_layers, prompt_examples=prompt_examples, seed=seed,
                         prompts=role_prompts(prompt or []), balance_roles=balance_roles,
                         chain_extra_tasks=[t for f in chain_tasks or [] for t in read_tasks(f)],
                         reward=reward)
    cfg.grpo.update(rollout_engine=_local_engine(engine), **settings)
    records = run_pipeline(cfg, log=lambda line: err.print(line, highlight=False, markup=False))
    last = list(records)[-1]
    err.print(f"trained policy in {output / last} (use --model hf:{output / last}); stage "
              f"records in {output / 'pipeline.json'}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the training commands to the `sleuth` app."""
    app.command("eval")(eval_command)
    app.add_typer(train_app, name="train")


__all__ = ["eval_command", "register"]
