"""The staged recipe on a tiny policy: chain demonstrations -> SFT -> GRPO on a curriculum,
one adapter through both stages, resumable by stage."""

from __future__ import annotations

import json

import pytest
import torch

from agents import load_chat_model
from graph import ResearchConfig
from training.pipeline import PipelineConfig, run_pipeline


@pytest.mark.slow
def test_pipeline_runs_its_stages_on_one_adapter_and_resumes(make_tiny_policy, tmp_path):
    policy = make_tiny_policy(initializer_range=0.3)
    cfg = PipelineConfig(
        output_dir=str(tmp_path / "run"), model=policy, stages=("chains", "grpo"),
        minutes={"chains": 0.001, "grpo": 10}, lora_r=4, chain_tasks=6,
        research=ResearchConfig(search_mode="fts", max_rounds=3, max_attempts=1, max_new_tokens=2),
        grpo={"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2,
              "temperature": 0.3, "dynamic_sampling": False, "save_steps": 1})
    logs: list[str] = []
    records = run_pipeline(cfg, log=logs.append)
    assert list(records) == ["chains", "grpo"]
    assert records["chains"]["demonstrations"] > 0 and records["chains"]["steps"] >= 1
    assert records["grpo"]["steps"] == 1 and records["grpo"]["rollouts"] == 2
    out = tmp_path / "run"
    # the chains adapter went on into GRPO: the same LoRA weights, not a fresh adapter
    # (a fresh one has every lora_B at zero; SFT moved them)
    chains = _adapter_state(out / "chains")
    grpo = _adapter_state(out / "grpo")
    assert chains.keys() == grpo.keys()
    assert all(grpo[k].abs().sum() > 0 for k in grpo if "lora_B" in k)
    card = json.loads((out / "grpo" / "sleuth.json").read_text())
    assert card == {"prompt_examples": False}  # trained without the worked examples
    assert load_chat_model(f"hf:{out / 'grpo'}").prompt_examples is False
    summary = json.loads((out / "pipeline.json").read_text())
    assert list(summary["stages"]) == ["chains", "grpo"] and summary["config"]["lora_r"] == 4
    # a second run finds both stages done: nothing is trained again
    again = run_pipeline(cfg, log=logs.append)
    assert again == records and sum("done earlier" in line for line in logs) == 2


def _adapter_state(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors")
