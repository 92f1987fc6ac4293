"""GPU check: one GRPO step and a 10-task evaluation on CUDA, with a tiny random Llama.

The model is a randomly initialised 2-layer Llama with SmolLM2's tokenizer (no weights to
download), so this checks the GPU path, not answer quality: the policy and the embedder load
on CUDA (bfloat16), the rollouts decode there, the GRPO update runs there with TRL settings
for a GPU, and the trained weights stay there. It prints the timings and, on CUDA, writes
benchmarks/results/gpu_check.json. On a machine without CUDA it says so and exits 0
(`--device cpu` runs the same steps on the CPU, to check the script itself).

Usage: python benchmarks/gpu_check.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def tiny_policy(device: str):
    """A random 2-layer Llama with SmolLM2's tokenizer, as a LocalChatModel on `device`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agents import LocalChatModel
    from agents.models import smollm2_folder
    from tools.device import dtype

    tok = AutoTokenizer.from_pretrained(str(smollm2_folder()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype(device)).eval()
    return LocalChatModel(model=model, tokenizer=tok, model_name="tiny-llama", max_new_tokens=24)


def answer_length(trajectory, gold=None) -> float:
    """A reward with spread for a random model (its answers are never right): the update
    then has non-zero advantages to train on."""
    return len(trajectory.answer or "") / 100


def check(device: str) -> dict:
    """Evaluate 10 tasks and train one GRPO step on `device`; returns the timings."""
    from graph import ResearchConfig
    from tools.worlds import generate_world
    from training.evaluate import evaluate
    from training.grpo import ResearchGRPOTrainer, grpo_config

    os.environ["SLEUTH_DEVICE"] = device  # the embedder and the trainer settings follow it
    policy = tiny_policy(device)
    tasks = generate_world(0, 10, hops=(2,)).tasks
    config = ResearchConfig(max_rounds=1, max_attempts=1, max_new_tokens=24, temperature=0.0)
    t0 = time.perf_counter()
    result = evaluate(tasks, model=policy, concurrency=10, config=config)
    eval_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        args = grpo_config(out, max_steps=1, num_generations=2, per_device_train_batch_size=4,
                           dynamic_sampling=False, save_steps=0)
        trainer = ResearchGRPOTrainer(policy, answer_length, args, train_dataset=tasks,
                                      research=config)
        t0 = time.perf_counter()
        trainer.train()
        step_s = time.perf_counter() - t0
        row = trainer.state.history[-1]
    where = {str(p.device) for p in policy.model.parameters()}
    if any(not w.startswith(device.split(":")[0]) for w in where):
        raise RuntimeError(f"weights ended up on {sorted(where)}, not {device}")
    return {"device": device, "device_name": _name(device), "eval_tasks": len(tasks),
            "eval_s": round(eval_s, 2), "eval_failed": len(result["runs"]["graph"]["failed"]),
            "grpo_step_s": round(step_s, 2), "grpo_rollout_s": round(row["rollout_s"], 2),
            "grpo_trained_samples": row["trained_samples"], "weights_on": sorted(where),
            "trainer_settings": {"use_cpu": args.use_cpu, "bf16": args.bf16}}


def _name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def main() -> int:
    """Run the check where CUDA is (or the CPU when asked); say why not otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible here (torch "
              f"{torch.__version__}, cuda build: {torch.version.cuda or 'none'}); nothing to check. "
              "Run it on a machine with a GPU, or with --device cpu to check the script.")
        return 0
    data = check(args.device)
    if args.device.startswith("cuda"):  # a CPU run only checks the script
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
