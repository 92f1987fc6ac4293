"""One GRPO step, ours against TRL's `GRPOTrainer`; the update with and without shared prefixes.

1. Both train SmolLM2-135M (full fine-tune, fp32, CPU) on the same prompts: a system turn of
   exactly `--prefix-tokens` tokens of instructions (as every call of one agent role shares)
   and a short question; 2 prompts x 4 generations, exactly `--tokens` completion tokens each
   (end-of-turn suppressed until then), the same reward, one optimiser step after a warm-up
   step. Each measurement runs in its own process (peak RSS is per process), alternating
   ours/TRL, `--repeats` times; medians are compared. Ours shares the system turn's keys and
   values in sampling (prefix cache) and in the update (`training.shared_prefix`); TRL
   computes every prompt whole.
2. The update alone on the learning benchmark's batches: 8 research rollouts (2 curriculum
   tasks x 4, the pipeline's research configuration, T 0.7) of the untrained SmolLM2 with a
   rank-8 LoRA adapter, with and without the worked examples in the prompts; every call
   given a non-zero advantage; `update` timed with `share_prefix` off and on, alternated,
   `--repeats` times each, in one process. Speedup = median seconds without / with.
3. Whole GRPO steps (`ResearchGRPOTrainer`: sampling the research rollouts, scoring, the
   update, the weight sync) of the learning pipeline's shape — 2 tasks x 4 rollouts at T 0.7,
   the pipeline's research configuration, rank-8 LoRA on SmolLM2, the same fixed tasks,
   every group updated (`dynamic_sampling` off, so both sides update every rollout) — today's
   (in-process fp32 sampling, every prompt computed whole in the update) against both levers
   (the CTranslate2 int8 engine, prefixes shared in the update). Each side in its own
   process, `--grpo-steps` steps after a warm-up step (the int8 side converts its weights
   then); median step seconds, split into sampling and update. Speedup = today / levers.
   The two engines sample different rollouts from the same tasks, so the calls a step trains
   on differ in number: the ratio of median seconds per trained call is reported beside it.
4. LoRA on the top layers only: `update` on one batch of section 2 (no worked examples,
   prefixes shared), with rank-8 LoRA on all 30 layers against LoRA on the top 10 and the
   top 5 only (below the lowest adapted layer nothing needs a gradient), alternated,
   `--repeats` times each, in one process. Speedup = median seconds all / top N.

`--sections` runs some of them (default all); the others are kept from the results file.

Usage: python benchmarks/train_step.py [--tokens 32] [--prefix-tokens 300] [--repeats 3]
       [--grpo-steps 3] [--sections trl,prefix,grpo_step,lora_layers]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PROMPTS = ["Where was the director of the film The Iron Harbour born? Answer briefly.",
           "Which was founded first, Orla Press or the Varo Courier? Answer briefly."]
G = 4
INSTRUCTIONS = ("You are the planner of a research team. Split the question into the smallest "
                "sub-questions that can each be answered by one page, in the order they must be "
                "answered; a later sub-question may use the answer of an earlier one. Answer in "
                "the format shown, one sub-question per line, and nothing else. ")


def reward_len(completions, **kwargs):
    """A reward with spread: prefer completions containing the letter 'a'."""
    return [float(str(c).count("a")) for c in completions]


def system_prompt(n_tokens: int) -> str:
    """Instructions of exactly `n_tokens` SmolLM2 tokens (empty for 0)."""
    from transformers import AutoTokenizer

    from agents.models import smollm2_folder

    tok = AutoTokenizer.from_pretrained(str(smollm2_folder()))
    ids = tok(INSTRUCTIONS * (1 + n_tokens // 40), add_special_tokens=False)["input_ids"]
    return tok.decode(ids[:n_tokens]) if n_tokens else ""


def chat(prompt: str, system: str) -> list[dict[str, str]]:
    """A prompt as chat messages, with the system turn when there is one."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]


def run_trl(tokens: int, system: str) -> float:
    """One TRL GRPOTrainer step (after a warm-up step); returns its seconds."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import smollm2_folder

    path = str(smollm2_folder())
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_dict({"prompt": [chat(p, system) for p in PROMPTS] * 4})
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none",
                      per_device_train_batch_size=len(PROMPTS) * G, num_generations=G,
                      max_completion_length=tokens, learning_rate=1e-6, max_steps=2,
                      logging_steps=1, save_strategy="no", temperature=0.7,
                      generation_kwargs={"min_new_tokens": tokens})
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    trainer = GRPOTrainer(model=model, reward_funcs=reward_len, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    return times[-1]


def run_ours(tokens: int, system: str) -> float:
    """One of our GRPO steps on the same prompts (after a warm-up step); returns its seconds."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from langchain_core.messages import HumanMessage, SystemMessage

    from agents.models import LocalChatModel, smollm2_folder
    from training.data import Sample, group_advantages
    from training.grpo import grpo_config, update

    policy = LocalChatModel.from_pretrained(smollm2_folder())
    args = grpo_config(tempfile.mkdtemp(), learning_rate=1e-6, temperature=0.7)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=args.learning_rate)

    def messages(prompt: str) -> list:
        return ([SystemMessage(system)] if system else []) + [HumanMessage(prompt)]

    def step(seed: int) -> float:
        t0 = time.perf_counter()
        jobs = [(p, seed * 100 + g) for p in PROMPTS for g in range(G)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            replies = list(pool.map(lambda j: policy.invoke(messages(j[0]), seed=j[1],
                                                          temperature=0.7, max_new_tokens=tokens,
                                                          min_new_tokens=tokens), jobs))
        samples = []
        for i in range(0, len(replies), G):
            group = replies[i:i + G]
            rewards = reward_len([r.content for r in group])
            for r, rew, adv in zip(group, rewards, group_advantages(rewards), strict=True):
                m = r.response_metadata
                samples.append(Sample("t", None, str(i), "writer", "m", m["prompt_token_ids"],
                                      m["completion_token_ids"], m["logprobs"], rew, {}, adv))
        update(policy.model, optimizer, samples, args)
        policy.batcher.prefixes.clear()
        return time.perf_counter() - t0

    step(0)
    return step(1)


def research_batch(prompt_examples: bool) -> tuple[object, list]:
    """A LoRA policy and the samples of one GRPO step of the learning pipeline: 2 curriculum
    tasks x 4 research rollouts at T 0.7, every call given a non-zero advantage."""
    import random

    from graph.run import research_many
    from tools.corpora import open_corpus
    from training import rewards
    from training.curriculum import Curriculum
    from training.data import build_samples
    from training.pipeline import PipelineConfig
    from training.policy import load_policy, lora_config

    cfg = PipelineConfig(output_dir=tempfile.mkdtemp())
    tasks = Curriculum(first_seed=cfg.first_seed).sample(2)
    policy = load_policy("local:smollm2", peft_config=lora_config(cfg.lora_r))
    research = cfg.research.model_copy(update={"temperature": 0.7, "seed": 0,
                                               "prompt_examples": prompt_examples})
    with open_corpus(tasks) as sources:
        results = research_many(tasks, samples_per_task=G, concurrency=2 * G, model=policy,
                                config=research, **sources.as_kwargs())
    samples = build_samples([r.trajectory for r in results if r.trajectory is not None],
                            rewards.default(), scale_rewards="none")
    rng = random.Random(0)
    for s in samples:  # every call trains, as in a step where every group is informative
        s.advantage = s.advantage or rng.choice((-0.5, 0.5))
    return policy, samples


def run_prefix_update(repeats: int) -> dict:
    """`update` seconds on research batches, share_prefix off and on, alternated."""
    import torch

    from training.grpo import grpo_config, update
    from training.policy import trainable_parameters
    from training.shared_prefix import prefix_tree

    out = {}
    for examples in (False, True):
        policy, samples = research_batch(examples)
        optimizer = torch.optim.AdamW(trainable_parameters(policy), lr=1e-4)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):
            for share in (False, True):
                args = grpo_config(tempfile.mkdtemp(), lora=True, temperature=0.7,
                                   share_prefix=share)
                t0 = time.perf_counter()
                update(policy.model, optimizer, samples, args)
                times[share].append(time.perf_counter() - t0)
                print("examples" if examples else "no examples", "shared" if share else "whole",
                      round(times[share][-1], 1), flush=True)
        tree = prefix_tree(samples)
        prompt = sum(len(s.prompt_ids) for s in samples)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["with_examples" if examples else "without_examples"] = {
            "calls": len(samples), "prompt_tokens": prompt,
            "completion_tokens": sum(len(s.completion_ids) for s in samples),
            "shared_prefixes": tree.nodes(),
            "prompt_tokens_not_recomputed": tree.shared_tokens(),
            "seconds_whole": [round(t, 2) for t in times[False]],
            "seconds_shared": [round(t, 2) for t in times[True]],
            "median_whole_s": round(med[False], 2), "median_shared_s": round(med[True], 2),
            "speedup": round(med[False] / med[True], 3)}
    return out


def run_lora_layers(repeats: int, tops: tuple[int, ...] = (10, 5)) -> dict:
    """`update` seconds on one research batch (no worked examples, prefixes shared), LoRA on
    every layer against LoRA on the top N layers only, alternated, in one process."""
    import torch

    from training.grpo import grpo_config, update
    from training.pipeline import PipelineConfig
    from training.policy import load_policy, lora_config, top_layers, trainable_parameters

    _, samples = research_batch(False)
    r = PipelineConfig(output_dir=tempfile.mkdtemp()).lora_r
    names = ["all", *(f"top{n}" for n in tops)]
    layers = [None, *(top_layers("local:smollm2", n) for n in tops)]
    policies = [load_policy("local:smollm2", peft_config=lora_config(r, ls)) for ls in layers]
    optimizers = [torch.optim.AdamW(trainable_parameters(p), lr=1e-4) for p in policies]
    args = grpo_config(tempfile.mkdtemp(), lora=True, temperature=0.7, share_prefix=True)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name, policy, optimizer in zip(names, policies, optimizers, strict=True):
            t0 = time.perf_counter()
            update(policy.model, optimizer, samples, args)
            times[name].append(time.perf_counter() - t0)
            print("lora", name, round(times[name][-1], 1), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"calls": len(samples), "prompt_tokens": sum(len(s.prompt_ids) for s in samples),
            "completion_tokens": sum(len(s.completion_ids) for s in samples),
            "layers": int(policies[0].model.config.num_hidden_layers),
            "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in med.items()},
            "speedup": {k: round(med["all"] / v, 3) for k, v in med.items() if k != "all"}}


GRPO_SIDES = {"today": {"rollout_engine": "transformers", "share_prefix": False},
              "levers": {"rollout_engine": "ct2-int8", "share_prefix": True}}


def run_grpo_steps(side: str, steps: int) -> dict:
    """`steps` whole GRPO steps after a warm-up step, one side's settings; their timings."""
    from tools.worlds import generate_world
    from training import rewards
    from training.grpo import ResearchGRPOTrainer, grpo_config
    from training.pipeline import PipelineConfig
    from training.policy import lora_config

    cfg = PipelineConfig(output_dir=tempfile.mkdtemp())
    tasks = generate_world(cfg.first_seed, 2 * (steps + 1), hops=(2, 3)).tasks
    args = grpo_config(tempfile.mkdtemp(), lora=True, temperature=0.7, max_steps=steps + 1,
                       save_steps=10_000, dynamic_sampling=False, **GRPO_SIDES[side])
    rows: list[dict] = []
    trainer = ResearchGRPOTrainer("local:smollm2", rewards.default(), args, train_dataset=tasks,
                                  peft_config=lora_config(cfg.lora_r), research=cfg.research,
                                  on_step=rows.append)
    trainer.train()
    timed = rows[1:]  # after the warm-up step
    return {"side": side, **GRPO_SIDES[side],
            "step_s": [round(r["step_s"], 2) for r in timed],
            "rollout_s": [round(r["rollout_s"], 2) for r in timed],
            "update_s": [round(r["step_s"] - r["rollout_s"], 2) for r in timed],
            "samples": [r["samples"] for r in timed]}


def run_grpo_step(steps: int) -> dict:
    """Both sides in their own processes; medians and the speedup."""
    out = {}
    for side in GRPO_SIDES:
        proc = subprocess.run([sys.executable, __file__, "--child", side, "--grpo-steps", str(steps)],
                              capture_output=True, text=True, check=True)
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(side, out[side], flush=True)
    empty = [side for side, v in out.items() if not all(v["samples"])]
    if empty:  # a side that trained nothing is not a GRPO step: no speedup to report
        raise SystemExit(f"grpo_step: steps of {', '.join(empty)} built no samples to train on "
                         f"({ {k: v['samples'] for k, v in out.items()} }); nothing written")
    for v in out.values():
        v.update({f"median_{k}": round(statistics.median(v[k]), 2)
                  for k in ("step_s", "rollout_s", "update_s")})
        v["median_samples"] = statistics.median(v["samples"])
        v["median_s_per_sample"] = round(statistics.median(
            s / n for s, n in zip(v["step_s"], v["samples"], strict=True)), 3)
    out["speedup"] = round(out["today"]["median_step_s"] / out["levers"]["median_step_s"], 3)
    # the engines sample different rollouts from the same tasks, so a step's work (the calls
    # it trains on) differs between the sides: the same ratio per trained call, beside it
    out["per_sample_speedup"] = round(out["today"]["median_s_per_sample"]
                                      / out["levers"]["median_s_per_sample"], 3)
    return out


def child(impl: str, tokens: int, prefix_tokens: int, grpo_steps: int = 3) -> None:
    """Measure one implementation in this process; print JSON."""
    if impl in GRPO_SIDES:
        print(json.dumps(run_grpo_steps(impl, grpo_steps)))
        return
    system = system_prompt(prefix_tokens)
    seconds = (run_ours if impl == "ours" else run_trl)(tokens, system)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    """Alternate ours and TRL in fresh processes, the update on research batches, whole GRPO
    steps; print the figures and write JSON (sections not run are kept from the file)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prefix-tokens", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--sections", default="trl,prefix,grpo_step,lora_layers")
    ap.add_argument("--child", choices=["ours", "trl", *GRPO_SIDES])
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens, args.prefix_tokens, args.grpo_steps)
        return
    sections = set(args.sections.split(","))
    if sections - {"trl", "prefix", "grpo_step", "lora_layers"}:
        raise SystemExit("--sections takes trl, prefix, grpo_step, lora_layers, "
                         f"not {args.sections!r}")
    path = RESULTS / "train_step.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if "trl" in sections:
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for _ in range(args.repeats):
            for impl in ("ours", "trl"):
                proc = subprocess.run([sys.executable, __file__, "--child", impl, "--tokens",
                                       str(args.tokens), "--prefix-tokens", str(args.prefix_tokens)],
                                      capture_output=True, text=True, check=True)
                runs[impl].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(impl, runs[impl][-1], flush=True)
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_rss_mb")}
               for k, v in runs.items()}
        result.update({"tokens": args.tokens, "prefix_tokens": args.prefix_tokens,
                       "prompts": len(PROMPTS), "generations": G, "repeats": args.repeats,
                       "runs": runs, "median": med})
    if "prefix" in sections:
        result["prefix_update"] = run_prefix_update(args.repeats)
    if "grpo_step" in sections:
        result["grpo_step"] = run_grpo_step(args.grpo_steps)
    if "lora_layers" in sections:
        result["lora_layers"] = run_lora_layers(args.repeats)
    summary = {}
    if "median" in result:
        med = result["median"]
        summary.update(time_ratio_vs_trl=round(med["ours"]["seconds"] / med["trl"]["seconds"], 3),
                       memory_ratio_vs_trl=round(med["ours"]["peak_rss_mb"]
                                                 / med["trl"]["peak_rss_mb"], 3))
    if "prefix_update" in result:
        summary.update(prefix_update_speedup=result["prefix_update"]["without_examples"]["speedup"],
                       prefix_update_speedup_with_examples=result["prefix_update"]["with_examples"]["speedup"])
    if "grpo_step" in result:
        summary["grpo_step_speedup"] = result["grpo_step"]["speedup"]
        if "per_sample_speedup" in result["grpo_step"]:
            summary["grpo_step_per_sample_speedup"] = result["grpo_step"]["per_sample_speedup"]
    if "lora_layers" in result:
        summary["top_layers_update_speedup"] = result["lora_layers"]["speedup"]
    result = {"summary": summary, **{k: v for k, v in result.items() if k != "summary"}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(summary)


if __name__ == "__main__":
    main()
