"""CML for the knowledge selector: groups with hard distractors, the three objectives, and a
trained policy that ranks gold passages first and says so in its card."""

from __future__ import annotations

import json
import random

import pytest
import torch

from agents.models import policy_settings
from training.cml import (
    blended_writer_sample,
    relevance_scores,
    selection_groups,
    selector_accuracy,
    train_cml,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def kb(hashed_world_kb):
    return hashed_world_kb


def test_groups_hold_one_gold_and_hard_distractors_from_the_knowledge_base(small_world, kb):
    tasks = small_world.tasks[:6]
    groups = selection_groups(tasks, knowledge=kb, k=3)
    gold_per_task = {t["question"]: {d["doc_id"] for d in t["docs"] if d["gold"]} for t in tasks}
    assert len(groups) == sum(len(v) for v in gold_per_task.values())
    for g in groups:
        gold = gold_per_task[g.question]
        assert g.gold.doc_id in gold and len(g.distractors) == 3
        assert not {p.doc_id for p in g.distractors} & gold  # never a gold page as distractor
        assert {p.doc_id for p in g.all_gold} == gold and g.rationale
    hard = {p.doc_id for p in kb.search(groups[0].question, k=8)} - gold_per_task[groups[0].question]
    assert {p.doc_id for p in groups[0].distractors} <= hard  # the knowledge base's own results
    assert selection_groups([{"question": "q", "answer": "a", "docs": []}]) == []
    by_source = selection_groups(tasks, knowledge={tasks[0]["source"]: kb}, k=3)
    assert [g.distractors for g in by_source] == [g.distractors for g in groups]
    unmapped = selection_groups(tasks, knowledge={"elsewhere": kb}, k=3)  # the task's own docs
    own = {d["doc_id"] for t in tasks for d in t["docs"]}
    assert all({p.doc_id for p in g.distractors} <= own for g in unmapped)


def test_blended_writer_sample_cites_the_gold_pages_among_distractors(small_world, kb,
                                                                      make_tiny_policy):
    chat = make_tiny_policy(prompt_examples=False)
    g = selection_groups(small_world.tasks[:1], knowledge=kb, k=3)[0]
    prompts = set()
    for seed in range(6):
        prompt, completion = blended_writer_sample(chat, g, random.Random(seed))
        text = chat.tokenizer.decode(completion, skip_special_tokens=True)
        shown = chat.tokenizer.decode(prompt)
        assert text.startswith(f"<answer>{g.answer}</answer>") and "[" in text  # default writer
        assert all(p.title in shown for p in g.all_gold)  # every gold page is in the evidence
        prompts.add(shown.count("\n["))
    assert len(prompts) > 1  # the number of distractors varies
    chat.prompts = {"writer": "writer_reasoned"}  # a policy trained on the reasoned writer
    prompt, completion = blended_writer_sample(chat, g, random.Random(0))
    text = chat.tokenizer.decode(completion, skip_special_tokens=True)
    assert text.endswith(f"<answer>{g.answer}</answer>")
    assert "links the facts" in chat.tokenizer.decode(prompt)


def test_scores_are_yes_no_log_odds_with_gradients(small_world, kb, make_tiny_policy):
    chat = make_tiny_policy()
    g = selection_groups(small_world.tasks[:1], knowledge=kb, k=2)[0]
    scores = relevance_scores(chat, g.question, [g.gold, *g.distractors])
    assert scores.shape == (3,) and scores.requires_grad
    one = relevance_scores(chat, g.question, [g.distractors[1]])  # padding changes nothing
    torch.testing.assert_close(one[0], scores[2], atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # 12 CML steps on a tiny Llama (~15 s): make test-all
def test_cml_teaches_the_tiny_policy_to_rank_gold_first(small_world, kb, make_tiny_policy,
                                                        tmp_path):
    tasks = small_world.tasks[:4]
    chat = make_tiny_policy(seed=1, prompt_examples=False)
    groups = selection_groups(tasks, knowledge=kb, k=2)
    before = selector_accuracy(chat, groups)
    stats = train_cml(tasks, model=chat, knowledge=kb, output_dir=tmp_path / "cml", k=2,
                      groups_per_step=4, max_steps=12, learning_rate=3e-3)
    after = selector_accuracy(chat, groups)
    assert stats["steps"] == 12 and stats["last_loss"] < stats["first_loss"]
    assert after["verdict_accuracy"] > before["verdict_accuracy"]
    assert after["gold_ranked_first"] >= before["gold_ranked_first"]
    rows = [json.loads(x) for x in (tmp_path / "cml" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"loss_contrastive", "loss_classification", "loss_writer"} <= set(rows[0])
    assert policy_settings(tmp_path / "cml") == {"prompt_examples": False, "judges_passages": True,
                                                 "prompts": {}}


def test_sleuth_train_cml_command(sleuth_in_process, make_tiny_policy, small_world, kb, tmp_path):
    tiny = make_tiny_policy()
    folder = tmp_path / "tiny"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    _, tasks = small_world.write(tmp_path / "w")
    r = sleuth_in_process("train", "cml", str(tasks), "--output", str(tmp_path / "cml"),
                          "--model", f"hf:{folder}", "--kb", str(kb.path), "-k", "2",
                          "--limit", "3", "--max-steps", "2", "--lora-r", "4")
    assert "2 steps" in r.stderr
    assert policy_settings(tmp_path / "cml")["judges_passages"] is True
    assert (tmp_path / "cml" / "adapter" / "adapter_model.safetensors").exists()
    bad = sleuth_in_process("train", "cml", str(tasks), "--output", str(tmp_path / "x"),
                            "--kb", str(tmp_path / "missing"), check=False)
    assert bad.returncode != 0 and "no knowledge base" in bad.stderr
