"""One GRPO step, ours against TRL's `GRPOTrainer`: seconds and peak memory.

Both train SmolLM2-135M (full fine-tune, fp32, CPU) on single-turn prompts: 2 prompts x 4
generations, exactly `--tokens` completion tokens each (end-of-turn suppressed until then),
the same reward, one optimiser step. Each measurement runs in its own process (peak RSS is
per process), alternating ours/TRL, `--repeats` times; medians are compared.

Usage: python benchmarks/train_step.py [--tokens 32] [--repeats 3]
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


def reward_len(completions, **kwargs):
    """A reward with spread: prefer completions containing the letter 'a'."""
    return [float(str(c).count("a")) for c in completions]


def run_trl(tokens: int) -> float:
    """One TRL GRPOTrainer step (after a warm-up step); returns its seconds."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import smollm2_folder

    path = str(smollm2_folder())
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in PROMPTS] * 4})
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


def run_ours(tokens: int) -> float:
    """One of our GRPO steps on the same prompts (after a warm-up step); returns its seconds."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from langchain_core.messages import HumanMessage

    from agents.models import LocalChatModel, smollm2_folder
    from training.data import Sample, group_advantages
    from training.grpo import grpo_config, update

    chat = LocalChatModel.from_pretrained(smollm2_folder())
    args = grpo_config(tempfile.mkdtemp(), learning_rate=1e-6, temperature=0.7)
    optimizer = torch.optim.AdamW(chat.model.parameters(), lr=args.learning_rate)

    def step(seed: int) -> float:
        t0 = time.perf_counter()
        jobs = [(p, seed * 100 + g) for p in PROMPTS for g in range(G)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            replies = list(pool.map(lambda j: chat.invoke([HumanMessage(j[0])], seed=j[1],
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
        update(chat.model, optimizer, samples, args)
        chat.batcher.prefixes.clear()
        return time.perf_counter() - t0

    step(0)
    return step(1)


def child(impl: str, tokens: int) -> None:
    """Measure one implementation in this process; print JSON."""
    seconds = (run_ours if impl == "ours" else run_trl)(tokens)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    """Alternate ours and TRL in fresh processes; print the table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["ours", "trl"])
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens)
        return
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for _ in range(args.repeats):
        for impl in ("ours", "trl"):
            proc = subprocess.run([sys.executable, __file__, "--child", impl, "--tokens",
                                   str(args.tokens)], capture_output=True, text=True, check=True)
            runs[impl].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(impl, runs[impl][-1], flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_rss_mb")}
           for k, v in runs.items()}
    result = {"tokens": args.tokens, "prompts": len(PROMPTS), "generations": G, "runs": runs,
              "median": med,
              "summary": {"time_ratio_vs_trl": round(med["ours"]["seconds"] / med["trl"]["seconds"], 3),
                          "memory_ratio_vs_trl": round(med["ours"]["peak_rss_mb"]
                                                       / med["trl"]["peak_rss_mb"], 3)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_step.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':6} {'seconds':>8} {'peak MB':>8}")
    for k in ("ours", "trl"):
        print(f"{k:6} {med[k]['seconds']:8.1f} {med[k]['peak_rss_mb']:8.0f}")
    print(result["summary"])


if __name__ == "__main__":
    main()
