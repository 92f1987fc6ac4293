"""The staged recipe on a tiny policy: chain demonstrations -> SFT -> CML -> GRPO on a
curriculum, one adapter through every stage, resumable by stage."""

from __future__ import annotations

import json

import pytest
import torch

from agents import load_chat_model
from graph import ResearchConfig
from training.pipeline import PipelineConfig, grpo_settings, run_pipeline


@pytest.mark.slow
def test_pipeline_runs_its_stages_on_one_adapter_and_resumes(make_tiny_policy, tmp_path,
                                                             musique_task):
    policy = make_tiny_policy(initializer_range=0.3)
    no_chain = {**musique_task, "id": "q2", "meta": {}}
    cfg = PipelineConfig(
        output_dir=str(tmp_path / "run"), model=policy, stages=("chains", "cml", "grpo"),
        minutes={"chains": 0.001, "cml": 0.001, "grpo": 10}, lora_r=4, lora_layers=1,
        chain_tasks=6, cml_tasks=3, chain_extra_tasks=[musique_task, no_chain],
        prompts={"writer": "writer_reasoned", "planner": "planner_reasoned"}, balance_roles=True,
        research=ResearchConfig(search_mode="fts", max_rounds=3, max_attempts=1, max_new_tokens=2),
        grpo={"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2,
              "temperature": 0.3, "dynamic_sampling": False, "save_steps": 1})
    logs: list[str] = []
    records = run_pipeline(cfg, log=logs.append)
    assert list(records) == ["chains", "cml", "grpo"]
    assert records["chains"]["demonstrations"] > 0 and records["chains"]["steps"] >= 1
    # the real task's decomposition was played too; the one without a chain was skipped
    assert (records["chains"]["extra_tasks"], records["chains"]["extra_chains"],
            records["chains"]["extra_demonstrations"]) == (2, 1, 1)
    assert records["cml"]["groups"] > 0 and records["cml"]["steps"] >= 1
    assert records["grpo"]["steps"] == 1 and records["grpo"]["rollouts"] == 2
    out = tmp_path / "run"
    # the chains adapter went on into GRPO: the same LoRA weights, not a fresh adapter
    # (a fresh one has every lora_B at zero; SFT moved them)
    chains = _adapter_state(out / "chains")
    grpo = _adapter_state(out / "grpo")
    assert chains.keys() == grpo.keys()
    assert all(grpo[k].abs().sum() > 0 for k in grpo if "lora_B" in k)
    assert {k.split(".layers.")[1].split(".")[0] for k in grpo} == {"1"}  # the top layer only
    assert json.loads((out / "chains" / "sleuth.json").read_text())["judges_passages"] is False
    card = json.loads((out / "grpo" / "sleuth.json").read_text())
    # trained without the worked examples; CML taught it to judge passages, GRPO kept that
    assert card == {"prompt_examples": False, "judges_passages": True,
                    "prompts": {"writer": "writer_reasoned", "planner": "planner_reasoned"}}
    loaded = load_chat_model(f"hf:{out / 'grpo'}")
    assert loaded.prompt_examples is False and loaded.judges_passages is True
    assert loaded.prompts == {"writer": "writer_reasoned", "planner": "planner_reasoned"}
    summary = json.loads((out / "pipeline.json").read_text())
    assert list(summary["stages"]) == ["chains", "cml", "grpo"] and summary["config"]["lora_r"] == 4
    assert summary["config"]["chain_extra_tasks"] == 2
    # a second run finds every stage done: nothing is trained again
    again = run_pipeline(cfg, log=logs.append)
    assert again == records and sum("done earlier" in line for line in logs) == 3


def test_grpo_settings_take_grpo_config_names_and_refuse_others(tmp_path):
    """`--grpo KEY=VALUE`: values parsed as JSON where they are JSON; a name GRPOConfig does
    not have fails before any stage runs, from the command line or the config alike."""
    assert grpo_settings(["learning_rate=2e-5", "beta=0.04", "dynamic_sampling=false",
                          "loss_type=dr_grpo"]) == {
        "learning_rate": 2e-5, "beta": 0.04, "dynamic_sampling": False, "loss_type": "dr_grpo"}
    with pytest.raises(ValueError, match="lr not a GRPO setting"):
        grpo_settings(["lr=2e-5"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        grpo_settings(["learning_rate"])
    with pytest.raises(ValueError, match="betta not a GRPO setting"):
        PipelineConfig(output_dir=str(tmp_path), grpo={"betta": 0.1})
    with pytest.raises(ValueError, match="between 1 and the model's 30 layers"):
        PipelineConfig(output_dir=str(tmp_path), grpo_layers=31)  # SmolLM2-135M has 30


def _adapter_state(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors")
