"""Rollout benchmark: concurrent vs sequential research runs, orchestration share, decode speed.

1. Trajectories per minute of N research runs with the local SmolLM2, run concurrently
   (`research_many`, concurrency N: their model calls are batched) against the same N runs
   one after another; same tasks, same seeds (so the same trajectories: we count how many
   answers are identical). Ratio = concurrent / sequential (goal >= 3x).
2. Orchestration share: each sequential run is replayed through the same graph with a model
   and a tool that return the recorded replies and hits instantly; the replay's wall time is
   what LangGraph, recording, prompt rendering, parsing and selection cost on that exact path.
   Share = replay time / real run time (goal <= 2%).
3. Batch-1 decode tokens/s of `LocalChatModel` against the memory-bandwidth limit (fp32
   weight bytes read per token / measured copy bandwidth), and against transformers'
   `generate` on the same prompt.
4. Engines: the same N tasks, N concurrent, with the CTranslate2 int8 engine against the
   in-process fp32 one (trajectories/min; the int8 conversion timed apart), and greedy EM
   on the first 100 tasks of the held-out world of `benchmarks/protocol.py` with each
   engine (the fp32 side is the cached untrained evaluation the baselines use).

Usage: python benchmarks/rollouts.py [--runs 8] [--quick] [--em-tasks 100]
       (writes benchmarks/results/rollouts.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents import load_chat_model  # noqa: E402
from graph import ResearchConfig, build_research_graph, research, research_many  # noqa: E402
from graph.run import sample_seed  # noqa: E402
from graph.trajectory import Trajectory  # noqa: E402
from tools.knowledge import KnowledgeBase, Passage  # noqa: E402
from tools.worlds import generate_world  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
console = Console()


def copy_bandwidth_gb_s(n_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Median memory copy bandwidth (read + write counted once each)."""
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * n_bytes / statistics.median(times) / 1e9


def decode_speed(model, new_tokens: int) -> dict:
    """Batch-1 decode tok/s of ours (prefill excluded) and of `generate` (prefill included)."""
    msgs = [SystemMessage("You are a helpful assistant."),
            HumanMessage("Tell a long story about a lighthouse.")]
    model.invoke(msgs, max_new_tokens=4, temperature=0.0)  # warm up, cache the prefix
    ours = []
    for _ in range(3):
        t0 = time.perf_counter()
        one = model.invoke(msgs, max_new_tokens=1, temperature=0.0)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.invoke(msgs, max_new_tokens=new_tokens, temperature=0.0)
        n = len(out.response_metadata["completion_token_ids"])
        ours.append((n - 1) / (time.perf_counter() - t0 - prefill))
        assert one.response_metadata["completion_token_ids"]
    ids, _ = model.encode_prompt(msgs)
    hf = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.model.generate(torch.tensor([ids]), max_new_tokens=new_tokens,
                                       min_new_tokens=new_tokens, do_sample=False)
        hf.append((out.shape[1] - len(ids)) / (time.perf_counter() - t0))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
    bw = copy_bandwidth_gb_s()
    limit = bw * 1e9 / 2 / weight_bytes  # a token reads every weight once (read bandwidth)
    return {"ours_tok_s": statistics.median(ours), "hf_generate_tok_s": statistics.median(hf),
            "weight_mb": weight_bytes / 1e6, "copy_bandwidth_gb_s": bw,
            "bandwidth_limit_tok_s": limit,
            "share_of_limit": statistics.median(ours) / limit}


class ReplayModel(BaseChatModel):
    """Returns the recorded reply for a recorded prompt, instantly."""

    replies: dict[str, str]

    @property
    def _llm_type(self) -> str:
        return "replay"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = self.replies[str(messages[-1].content)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class ReplayRetriever:
    """Returns the recorded hits for a recorded query, instantly."""

    def __init__(self, traj: Trajectory):
        self.hits = {s.input["query"]: [Passage(**h) for h in s.output] for s in traj.tool_steps}

    def search(self, query: str, k: int = 5) -> list[Passage]:
        return self.hits.get(query, [])


def replay_seconds(result, cfg: ResearchConfig) -> tuple[float, bool]:
    """Wall time of the same run with instant model and tools, and whether it matched."""
    traj = result.trajectory
    replies = {s.prompt_messages[-1]["content"]: s.text for s in traj.model_steps}
    model = ReplayModel(replies=replies)
    graph = build_research_graph(tools=[ReplayRetriever(traj)], model=model, config=cfg)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = research(result.question, model=model, config=cfg, graph=graph)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out.answer == result.answer


def compare_engines(tasks: list[dict], kb: KnowledgeBase, cfg: ResearchConfig, fp32_s: float,
                    em_tasks: int) -> dict:
    """The int8 engine on the same concurrent runs (its conversion timed apart), and both
    engines' greedy EM on the held-out world's first `em_tasks` tasks (paired rows)."""
    from protocol import evaluate_cached, paired, rows, suites

    int8 = load_chat_model("local:smollm2", engine="ct2-int8")
    int8.invoke([HumanMessage("warm up")], max_new_tokens=2)  # converts the weights
    t0 = time.perf_counter()
    research_many(tasks, concurrency=len(tasks), model=int8, knowledge=kb, config=cfg)
    int8_s = time.perf_counter() - t0
    world = suites()["world"]  # fp32: the cached untrained evaluation, its first tasks
    base = {"int8_concurrent_s": int8_s, "fp32_concurrent_s": fp32_s,
            "int8_traj_per_min": 60 * len(tasks) / int8_s, "conversion_s": int8.sampler.sync_s[0],
            "engine_speedup": round(fp32_s / int8_s, 3), "em_tasks": em_tasks}
    if not em_tasks:  # --em-tasks 0: speed only
        return {**base, "em_fp32": None, "em_int8": None, "em_delta": None, "em_delta_ci95": None}
    held_out = world[:em_tasks]
    ids = {t["id"] for t in held_out}
    fp32_rows = [r for r in rows(evaluate_cached("local:smollm2", "world", world, say=console.print),
                                 "graph") if r["task_id"] in ids]
    int8_rows = rows(evaluate_cached("local:smollm2", "world", held_out, engine="ct2-int8",
                                     say=console.print), "graph")
    delta = paired(fp32_rows, int8_rows)
    em = {k: round(100 * sum(r["em"] for r in v) / len(v), 1)
          for k, v in (("fp32", fp32_rows), ("int8", int8_rows))}
    return {**base, "em_fp32": em["fp32"], "em_int8": em["int8"], "em_delta": delta["gain"],
            "em_delta_ci95": delta["ci95"], "em_gained": delta["gained"], "em_lost": delta["lost"]}


def main() -> None:
    """Run, print, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="2 runs, short decode, 10 EM tasks")
    ap.add_argument("--em-tasks", type=int, default=100, help="Held-out tasks for the engines' EM.")
    args = ap.parse_args()
    runs = 2 if args.quick else args.runs
    model = load_chat_model("local:smollm2")
    world = generate_world(seed=0, n_tasks=runs, hops=(2, 3))
    kb = KnowledgeBase(tempfile.mkdtemp(prefix="rollouts-kb-"))
    kb.ingest(world.docs, progress=False)
    cfg = ResearchConfig(max_rounds=2, temperature=0.7, seed=1234)
    model.invoke([HumanMessage("warm up")], max_new_tokens=2)
    kb.search("warm up", k=1)

    console.print(f"[bold]1. {runs} research runs, sequential[/bold]")
    seq, t0 = [], time.perf_counter()
    for task in world.tasks:
        run_cfg = cfg.model_copy(update={"seed": sample_seed(cfg.seed, task["id"], 0)})
        seq.append(research(task["question"], model=model, knowledge=kb, config=run_cfg,
                            task_id=task["id"]))
    seq_s = time.perf_counter() - t0
    console.print(f"[bold]   {runs} research runs, concurrent[/bold]")
    first_batch = len(model.batcher.batch_sizes)
    t0 = time.perf_counter()
    conc = research_many(world.tasks, concurrency=runs, model=model, knowledge=kb, config=cfg)
    conc_s = time.perf_counter() - t0
    batches = model.batcher.batch_sizes[first_batch:]
    same = sum(a.answer == b.answer for a, b in zip(seq, conc, strict=True))

    console.print("[bold]2. replaying the sequential runs with instant model and tools[/bold]")
    replays = [replay_seconds(r, cfg.model_copy(update={"seed": r.trajectory.config["seed"]}))
               for r in seq]
    overhead = [t for t, _ in replays]
    walls = [r.stats["seconds"] for r in seq]
    share = sum(overhead) / sum(walls)

    console.print("[bold]3. batch-1 decode[/bold]")
    dec = decode_speed(model, 32 if args.quick else 128)
    console.print("[bold]4. engines: int8 against fp32[/bold]")
    engines = compare_engines(world.tasks, kb, cfg, conc_s, 10 if args.quick else args.em_tasks)
    results = {
        "runs": runs, "config": cfg.model_dump(),
        "sequential_s": seq_s, "concurrent_s": conc_s,
        "sequential_traj_per_min": 60 * runs / seq_s, "concurrent_traj_per_min": 60 * runs / conc_s,
        "identical_answers": same, "mean_batch_size": float(np.mean(batches)) if batches else 0.0,
        "max_batch_size": max(batches) if batches else 0,
        "model_calls": sum(r.stats["model_calls"] for r in seq),
        "orchestration_s_per_run": statistics.median(overhead),
        "replays_matching": sum(ok for _, ok in replays),
        "wall_s_per_run": statistics.median(walls), "decode": dec, "engines": engines,
        "summary": {"concurrent_speedup": round(seq_s / conc_s, 3),
                    "orchestration_share": round(share, 4),
                    "decode_tok_s_bs1": round(dec["ours_tok_s"], 2),
                    "engine_speedup": engines["engine_speedup"],
                    "engine_em_delta": engines["em_delta"]},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "rollouts_quick.json" if args.quick else "rollouts.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")

    t = Table(title=f"{runs} research runs, local SmolLM2, same tasks and seeds")
    for col in ("mode", "seconds", "trajectories/min", "mean batch", "speedup"):
        t.add_column(col)
    t.add_row("sequential", f"{seq_s:.1f}", f"{results['sequential_traj_per_min']:.2f}", "1", "1.00x")
    t.add_row(f"concurrent ({runs})", f"{conc_s:.1f}", f"{results['concurrent_traj_per_min']:.2f}",
              f"{results['mean_batch_size']:.2f}", f"{seq_s / conc_s:.2f}x")
    console.print(t)
    console.print(f"identical answers sequential vs concurrent: {same}/{runs}")
    console.print(f"orchestration (LangGraph + recording + prompts + parsing + selection), "
                  f"measured by instant replay ({results['replays_matching']}/{runs} replays "
                  f"reproduced the answer): {share:.2%} of wall time "
                  f"({statistics.median(overhead) * 1000:.1f} ms of "
                  f"{statistics.median(walls):.1f} s per run, median)")
    t = Table(title="batch-1 decode, fp32")
    for col in ("ours tok/s", "HF generate tok/s", "weights MB", "copy GB/s", "limit tok/s", "share"):
        t.add_column(col)
    t.add_row(f"{dec['ours_tok_s']:.1f}", f"{dec['hf_generate_tok_s']:.1f}", f"{dec['weight_mb']:.0f}",
              f"{dec['copy_bandwidth_gb_s']:.1f}", f"{dec['bandwidth_limit_tok_s']:.1f}",
              f"{dec['share_of_limit']:.0%}")
    console.print(t)
    console.print(f"engines: int8 {engines['int8_concurrent_s']:.1f} s vs fp32 {conc_s:.1f} s for "
                  f"{runs} concurrent runs ({engines['engine_speedup']:.2f}x; conversion "
                  f"{engines['conversion_s']:.1f} s); greedy EM on {engines['em_tasks']} held-out "
                  f"tasks: int8 {engines['em_int8']} vs fp32 {engines['em_fp32']} "
                  f"(difference {engines['em_delta']}, 95% CI {engines['em_delta_ci95']})")
    console.print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
