"""`report_to` in our own training loops: GRPO and CML rows go to TensorBoard (read back from
the events files), beside metrics.jsonl; SFT passes it to TRL; missing trackers are clear."""

from __future__ import annotations

import json
import warnings

import pytest

from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from training import trackers
from training.grpo import ResearchGRPOTrainer, grpo_config, is_eval_row
from training.trackers import MetricsLogger, report_targets, scalars

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard extra (pip install 'sleuth[tensorboard]')").EventAccumulator


@pytest.fixture
def kb(small_world, tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb


@pytest.fixture(autouse=True)
def default_log_dir(monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)


def events(run_dir):
    """The scalars of one TensorBoard run folder: {tag: {step: value}}."""
    assert any(f.stat().st_size > 0 for f in run_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_grpo_logs_every_row_to_tensorboard(make_tiny_policy, small_world, kb, tmp_path):
    from tests.test_training import TOY, even_first_tokens

    out = tmp_path / "run"
    policy = make_tiny_policy(0, initializer_range=0.3, model_name="toy")
    args = grpo_config(out, max_steps=2, save_steps=0, per_device_train_batch_size=2,
                       num_generations=2, temperature=0.3, dynamic_sampling=False,
                       learning_rate=1e-3, report_to=["tensorboard"], eval_strategy="steps",
                       eval_steps=2)
    ResearchGRPOTrainer(policy, even_first_tokens, args, train_dataset=small_world.tasks[:1],
                        research=TOY, sources={"knowledge": kb},
                        eval_dataset=small_world.tasks[10:11]).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (run_dir,) = (out / "runs").iterdir()  # output_dir/runs/<time>_<host>, as transformers
    scalars_ = events(run_dir)
    train = [r for r in rows if not is_eval_row(r)]
    for key in ("reward/reward", "loss", "em", "searches"):
        assert scalars_[f"train/{key}"] == pytest.approx({r["step"]: r[key] for r in train})
    (evaluation,) = [r for r in rows if is_eval_row(r)]
    assert scalars_["eval/em"] == pytest.approx({2: evaluation["eval_em"]})
    assert (out / "curves.png").exists()  # the PNG curves are drawn as before


def test_cml_logs_to_tensorboard_from_the_command_line(sleuth_in_process, make_tiny_policy,
                                                       small_world, kb, tmp_path):
    tiny = make_tiny_policy()
    folder = tmp_path / "tiny"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    _, tasks = small_world.write(tmp_path / "w")
    sleuth_in_process("train", "cml", str(tasks), "--output", str(tmp_path / "cml"),
                      "--model", f"hf:{folder}", "--kb", str(kb.path), "-k", "2", "--limit", "2",
                      "--max-steps", "2", "--lora-r", "4", "--report-to", "tensorboard")
    rows = [json.loads(x) for x in (tmp_path / "cml" / "metrics.jsonl").read_text().splitlines()]
    (run_dir,) = (tmp_path / "cml" / "runs").iterdir()
    got = events(run_dir)
    assert got["train/loss"] == pytest.approx({r["step"]: r["loss"] for r in rows})
    assert "train/loss_contrastive" in got and "train/gold_ranked_first" in got


def test_report_to_names(monkeypatch, tmp_path):
    assert report_targets("none") == report_targets(None) == report_targets(["none"]) == []
    assert report_targets("tensorboard") == report_targets(["tensorboard", "tensorboard"]) == ["tensorboard"]
    monkeypatch.setattr(trackers, "_installed", lambda name: name == "tensorboard")
    assert report_targets("all") == ["tensorboard"]
    with pytest.warns(UserWarning, match="wandb is not installed"):
        assert report_targets("tensorboard,wandb") == ["tensorboard"]
    with pytest.warns(UserWarning, match="'mlflow' is not supported"):
        assert report_targets(["mlflow"]) == []
    monkeypatch.setattr(trackers, "_installed", lambda name: False)
    with pytest.raises(ImportError, match=r"pip install 'sleuth\[tensorboard\]'"):
        report_targets("tensorboard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger = MetricsLogger("none", tmp_path / "never")
        logger.log({"step": 1, "loss": 0.5})
        logger.close()
    assert not (tmp_path / "never").exists()
    assert scalars({"step": 3, "loss": 0.5, "eval_em": 1, "note": "x", "bad": float("nan")}) == {
        "train/loss": 0.5, "eval/em": 1.0}
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    assert trackers.tensorboard_dir(tmp_path / "out") == tmp_path / "tb"


@pytest.mark.slow  # a TRL SFT run: make test-all
def test_sft_passes_report_to_to_trl(make_tiny_policy, small_world, kb, tmp_path):
    """`train_sft(report_to=...)` reaches TRL's SFTTrainer (it hard-coded "none" before)."""
    from graph import TrajectoryStore, research_many
    from tests.test_training import TOY
    from training.sft import train_sft

    store = TrajectoryStore(tmp_path / "runs")
    research_many(small_world.tasks[:1], samples_per_task=2, model=make_tiny_policy(),
                  knowledge=kb, store=store, config=TOY.model_copy(update={"max_new_tokens": 4}))
    train_sft(store, model=make_tiny_policy(), reward=lambda t, task=None: 1.0, min_reward=0.5,
              output_dir=tmp_path / "sft", max_steps=1, report_to="tensorboard")
    (run_dir,) = (tmp_path / "sft" / "trainer" / "runs").iterdir()
    assert "train/loss" in events(run_dir)
