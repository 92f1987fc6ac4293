"""GRPO and SFT: the loss is right, a tiny policy learns a toy world, checkpoints resume."""

from __future__ import annotations

import json

import pytest
import torch

from agents import LocalChatModel, load_chat_model
from graph import ResearchConfig, TrajectoryStore, research_many
from graph.trajectory import Gold, ModelStep, Trajectory
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from training.curriculum import Curriculum, Level
from training.data import Sample, balance_roles, build_samples
from training.grpo import (
    ResearchGRPOTrainer,
    completion_logps,
    grpo_config,
    policy_loss,
    sampled,
    train_grpo,
    train_grpo_offline,
)
from training.policy import load_policy, lora_config, save_policy, save_weights
from training.sft import train_sft

TOY = ResearchConfig(search_mode="fts", max_rounds=1, max_attempts=1, max_new_tokens=1)


def even_first_tokens(trajectory, task=None):
    """The toy world's reward: the right action is a reply starting with an even token id."""
    firsts = [s.completion_token_ids[0] for s in trajectory.model_steps if s.completion_token_ids]
    return sum(i % 2 == 0 for i in firsts) / max(1, len(firsts))


@pytest.fixture
def toy_policy(make_tiny_policy):
    """Fresh random 2-layer Llamas with the SmolLM2 tokenizer and peaked logits: toy_policy(seed)."""
    return lambda seed=0, **kw: make_tiny_policy(seed, initializer_range=0.3, model_name="toy", **kw)


@pytest.fixture
def toy_kb(small_world, tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb


def test_gradient_scales_with_group_advantage_and_masked_tokens_get_none():
    old = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-0.3, -1.2, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    adv = torch.tensor([2.0, -0.5])
    for loss_type in ("dapo", "grpo", "bnpo", "dr_grpo"):
        logps = old.clone().requires_grad_(True)
        loss, stats = policy_loss(logps, old, adv, mask, loss_type=loss_type)
        loss.backward()
        g = logps.grad
        assert torch.all(g[mask == 0] == 0)  # padding / prompt positions: no gradient
        assert torch.allclose(g[0, :3], g[0, 0].expand(3)) and torch.allclose(g[1, :2], g[1, 0].expand(2))
        per_token_0 = g[0, 0] * (3 if loss_type == "grpo" else 1)
        per_token_1 = g[1, 0] * (2 if loss_type == "grpo" else 1)
        assert float(per_token_0 / per_token_1) == pytest.approx(-4.0)  # = A0 / A1
        assert float(g[0, 0]) < 0  # a positive advantage pushes its tokens' logprob up
        assert stats["clip_ratio"] == 0.0
    # away from the ratio 1 the clip stops the gradient of an over-pushed positive token
    logps = (old + torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])).requires_grad_(True)
    loss, stats = policy_loss(logps, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2)
    loss.backward()
    assert logps.grad[0, 0] == 0 and logps.grad[0, 1] != 0 and stats["clip_ratio"] > 0


@pytest.mark.parametrize("engine", ["transformers",
                                    pytest.param("ct2-int8", marks=pytest.mark.slow)])
def test_grpo_raises_the_reward_on_a_toy_world(toy_policy, small_world, toy_kb, tmp_path, engine):
    if engine == "ct2-int8":
        pytest.importorskip("ctranslate2")
    policy = toy_policy(engine=engine)
    rows = []
    # the toy reward has no right answer to vary, so no group would survive dynamic sampling
    # int8 weights of this random model are more peaked than its fp32 ones: without more
    # temperature a role can settle on one wrong reply before the others are learnt
    steps = 8 if engine == "transformers" else 14  # int8 rollouts see small updates late
    args = grpo_config(tmp_path / "run", learning_rate=5e-3, max_steps=steps, save_steps=4,
                       temperature=0.3 if engine == "transformers" else 0.7, seed=0,
                       dynamic_sampling=False)
    train_grpo(small_world.tasks[:1], model=policy, output_dir=tmp_path / "run",
               reward=even_first_tokens, knowledge=toy_kb, group_size=8, batch_tasks=1,
               research=TOY, args=args, on_step=rows.append)
    rewards_ = [r["reward/reward"] for r in rows]
    assert len(rewards_) == steps
    first, last = sum(rewards_[:3]) / 3, sum(rewards_[-3:]) / 3
    assert first < 0.9 and last >= first + 0.5 * (1 - first), rewards_  # half the room closed
    out = tmp_path / "run"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == steps
    assert (out / "curves.png").exists() and (out / "checkpoint-4" / "grpo_state.json").exists()
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"reward/reward", "em", "searches_after_miss", "format_rate", "tokens", "step_s",
            "loss"} <= set(first)
    trained = load_chat_model(f"hf:{out}")  # the output folder loads back as a model spec
    assert isinstance(trained, LocalChatModel)
    if engine == "ct2-int8":  # sampled by int8 weights: trained with the mismatch corrected
        trained = [r for r in rows if r["trained_samples"]]
        assert trained and all(0 < r["importance_kept"] <= 1 and r["sampler_logp_gap"] > 0
                               for r in trained)
        assert len(policy.sampler.sync_s) >= steps  # new weights converted after every update


def test_grpo_resumes_from_its_last_checkpoint(toy_policy, small_world, toy_kb, tmp_path):
    out = tmp_path / "run"
    common = dict(model=toy_policy(), output_dir=out, reward=even_first_tokens,
                  knowledge=toy_kb, group_size=2, batch_tasks=1, research=TOY)
    # Three steps, checkpoint at 2: step 3 is logged but lost, as in a crash before step 4.
    train_grpo(small_world.tasks[:2], args=grpo_config(out, max_steps=3, save_steps=2,
                                                        learning_rate=1e-3, temperature=0.3,
                                                        dynamic_sampling=False),
               **common)
    rows = []
    common["model"] = toy_policy(seed=1)  # a "restarted process": fresh weights
    train_grpo(small_world.tasks[:2], resume=True, on_step=rows.append,
               args=grpo_config(out, max_steps=3, save_steps=2, learning_rate=1e-3,
                                temperature=0.3, dynamic_sampling=False), **common)
    assert [r["step"] for r in rows] == [3]
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]  # the lost step 3 is logged once, by the resumed run
    ckpt = torch.load(out / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert ckpt["optimizer"]["state"]  # the optimiser state was saved and restored


def test_lora_grpo_saves_adapter_and_merged_model(toy_policy, small_world, toy_kb, tmp_path):
    out = tmp_path / "lora"
    train_grpo(small_world.tasks[:1], model=toy_policy(), output_dir=out, lora=True,
               lora_r=4, reward=even_first_tokens, knowledge=toy_kb, group_size=2,
               batch_tasks=1, research=TOY,
               args=grpo_config(out, max_steps=1, save_steps=0, learning_rate=1e-3, beta=0.05,
                                temperature=0.3, dynamic_sampling=False))
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "config.json").exists()
    assert not (out / "adapter_config.json").exists()  # the top folder is a plain merged model


def test_grpo_leaves_the_config_it_is_given_unchanged(toy_policy, small_world, toy_kb, tmp_path):
    args = grpo_config(tmp_path / "elsewhere", max_steps=5, learning_rate=1e-3, temperature=0.3,
                       dynamic_sampling=False)
    rows = []
    train_grpo(small_world.tasks[:1], model=toy_policy(), output_dir=tmp_path / "run", steps=1,
               group_size=2, batch_tasks=1, reward=even_first_tokens, knowledge=toy_kb,
               research=TOY, args=args, on_step=rows.append)
    assert [r["rollouts"] for r in rows] == [2]  # one step of one task x 2 rollouts ran...
    assert (tmp_path / "run" / "metrics.jsonl").exists()  # ...into the output_dir given
    assert (args.max_steps, args.num_generations, args.per_device_train_batch_size,
            args.output_dir) == (5, 4, 8, str(tmp_path / "elsewhere"))  # ...on a copy of args


def test_a_step_trains_whole_groups(toy_policy, small_world, tmp_path):
    with pytest.raises(ValueError, match=r"per_device_train_batch_size \(6\) must be a multiple "
                                         r"of num_generations \(4"):
        grpo_config(tmp_path, per_device_train_batch_size=6, num_generations=4)
    # TRL accepts this one (its generation batch, 2 x 2 accumulation steps, holds 4)
    from trl import GRPOConfig

    args = GRPOConfig(str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                      num_generations=4, per_device_train_batch_size=2,
                      gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="must be a multiple of num_generations"):
        ResearchGRPOTrainer(toy_policy(), None, args, small_world.tasks[:1])


def test_dynamic_sampling_keeps_only_groups_whose_correctness_varies(toy_policy, tmp_path):
    trainer = ResearchGRPOTrainer(toy_policy(), even_first_tokens, grpo_config(tmp_path),
                                  train_dataset=[{"id": "t", "question": "q"}])

    def run(group: str, answer: str) -> Trajectory:
        return Trajectory(group_id=group, answer=answer, gold=Gold(answer="Varo"))

    mixed = [run("a", "Varo"), run("a", "Oslo")]
    kept = trainer._informative(mixed + [run("b", "Oslo"), run("b", "Oslo"),
                                         run("c", "Varo"), run("c", "Varo")])
    assert kept == mixed  # all-wrong and all-right groups carry no correctness signal
    plain = ResearchGRPOTrainer(toy_policy(), even_first_tokens,
                                grpo_config(tmp_path, dynamic_sampling=False),
                                train_dataset=[{"id": "t", "question": "q"}])
    assert len(plain._informative(mixed + [run("b", "Oslo")])) == 3


def test_a_step_whose_calls_all_failed_is_an_error_not_an_empty_update():
    broken = [Trajectory(steps=[ModelStep(role="planner", error="RuntimeError: sync failed")])] * 2
    with pytest.raises(RuntimeError, match="2 failed, the first with: RuntimeError: sync failed"):
        sampled(broken)
    fine = [Trajectory(steps=[ModelStep(role="planner", completion_token_ids=[1, 2])]), broken[0]]
    assert sampled(fine) == fine  # one call with tokens is a step to train on
    assert sampled([]) == []


def test_grpo_draws_fresh_tasks_from_a_curriculum(toy_policy, tmp_path):
    """Every step draws new generated tasks, adds their pages to the knowledge base, tells
    the curriculum how each group went, and a checkpoint keeps the curriculum's state."""
    curriculum = Curriculum(first_seed=900_000, world_tasks=4,
                            levels=(Level(2, "bridge", 2, 0.0), Level(2, "comparison", 2, 0.0)))
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    rows = []
    trainer = ResearchGRPOTrainer(toy_policy(), even_first_tokens,
                                  grpo_config(tmp_path / "run", max_steps=2, save_steps=2,
                                              per_device_train_batch_size=4, num_generations=2,
                                              temperature=0.3, dynamic_sampling=False),
                                  train_dataset=curriculum, research=TOY,
                                  sources={"knowledge": kb}, on_step=rows.append)
    trainer.train()
    assert [r["groups"] for r in rows] == [2, 2]
    assert sum(t.runs for t in curriculum.tallies.values()) == 2 * 2 * 2  # steps x tasks x G
    assert len(kb) > 0  # the drawn tasks' pages were ingested before their rollouts
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / "grpo_state.json").read_text())
    assert saved["sampler"]["next_seed"] == curriculum.next_seed > 900_000


def test_the_curriculum_draws_every_kind_equally_often_and_weights_levels_within_a_kind():
    """Success targeting alone draws the kind the policy already solves; balanced kinds keep
    half of each step on bridges even when every bridge so far failed."""
    def curriculum(**kw):
        c = Curriculum(first_seed=910_000, world_tasks=8, seed=3, **kw,
                       levels=(Level(2, "bridge", 2, 0.0), Level(3, "bridge", 2, 0.0),
                               Level(2, "comparison", 2, 0.0)))
        for level, right in zip(c.levels, (0, 0, 25), strict=True):
            c.tallies[level].runs, c.tallies[level].right = 50, right
        return [t["type"] for t in c.sample(20)]

    assert curriculum().count("bridge") == 10
    assert curriculum(balance_kinds=False).count("comparison") >= 15


def test_grpo_evaluates_held_out_tasks_every_step_and_logs_eval_rows(toy_policy, small_world,
                                                                    toy_kb, tmp_path):
    """eval_strategy="steps" (TrainingArguments' names): greedy runs of the held-out tasks
    before training and after every step, logged as eval_* rows beside the step rows, kept in
    checkpoints and drawn in the curves; steps log the batch's grounding metrics too."""
    out, evals = tmp_path / "run", []
    heldout = small_world.tasks[10:12]
    trainer = ResearchGRPOTrainer(
        toy_policy(), even_first_tokens,
        grpo_config(out, max_steps=2, save_steps=2, per_device_train_batch_size=2,
                    num_generations=2, temperature=0.3, dynamic_sampling=False,
                    eval_strategy="steps", eval_steps=1, eval_on_start=True),
        train_dataset=small_world.tasks[:1], research=TOY, sources={"knowledge": toy_kb},
        eval_dataset=heldout, on_evaluate=evals.append)
    trainer.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], "eval_runtime" in r) for r in rows] == [
        (0, True), (1, False), (1, True), (2, False), (2, True)]
    for r in rows[1::2]:  # the step rows: batch means of the new metrics
        assert all(0 <= r[k] <= 1 for k in ("knowledge_f1", "evidence_f1", "retrieval_accuracy"))
    for r in rows[0::2]:  # the eval rows: every `sleuth eval` metric of the held-out runs
        assert r["eval_tasks"] == 2 and r["eval_failed"] == 0
        assert all(0 <= r[f"eval_{k}"] <= 1 for k in ("em", "knowledge_f1", "retrieval_accuracy",
                                                      "evidence_f1"))
    assert evals == rows[0::2]
    saved = json.loads((out / "checkpoint-2" / "grpo_state.json").read_text())
    assert [r["step"] for r in saved["eval_history"]] == [0, 1, 2]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ValueError, match="pass eval_dataset"):
        ResearchGRPOTrainer(toy_policy(), even_first_tokens,
                            grpo_config(out, eval_strategy="steps", eval_steps=1),
                            train_dataset=small_world.tasks[:1])
    with pytest.raises(ValueError, match="'no' or 'steps'"):
        ResearchGRPOTrainer(toy_policy(), even_first_tokens,
                            grpo_config(out, eval_strategy="epoch"),
                            train_dataset=small_world.tasks[:1], eval_dataset=heldout)


def test_api_models_are_refused_for_training(small_world, tmp_path):
    for spec in ("openai:gpt-4o-mini", "ollama:llama3"):
        with pytest.raises(ValueError, match="training needs a local model: local:smollm2, "
                                             "local:smollm2-sleuth or hf:<folder>"):
            load_policy(spec)
    with pytest.raises(ValueError, match="training needs a local model"):
        train_sft([], model="openai:gpt-4o-mini", output_dir=tmp_path / "sft")


def _lora_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_a_saved_lora_policy_loads_back_merged_or_to_train_on(toy_policy, tmp_path, monkeypatch):
    """Fast twin of the shipped-adapter test: the tiny model as the `local:` base."""
    from safetensors.torch import load_file

    import agents.models

    home = tmp_path / "home"
    save_weights(toy_policy(), home / "models" / "smollm2-135m-instruct")  # the base
    chat = load_policy(toy_policy(), peft_config=lora_config(4))
    with torch.no_grad():  # a trained adapter: B = 0 would merge to the base unchanged
        for name, p in chat.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    save_policy(chat, tmp_path / "saved")
    adapter = load_file(tmp_path / "saved" / "adapter" / "adapter_model.safetensors")
    base = toy_policy().model.state_dict()
    loaded = load_policy(f"hf:{tmp_path / 'saved'}")
    assert loaded.model.dtype == torch.float32 or torch.cuda.is_available()
    weights = loaded.model.state_dict()
    changed = [k for k in base if not torch.equal(base[k], weights[k])]
    assert changed  # the adapter was merged into the saved weights
    # the shipped-adapter spec, with the tiny base and this adapter
    monkeypatch.setenv("SLEUTH_HOME", str(home))
    monkeypatch.setattr(agents.models, "SLEUTH_ADAPTER", tmp_path / "saved" / "adapter")
    again = load_policy("local:smollm2-sleuth", peft_config=lora_config(4))
    state = _lora_state(again.model)
    assert state.keys() == adapter.keys() and all(torch.equal(state[k], adapter[k]) for k in state)
    assert all(p.requires_grad for n, p in again.model.named_parameters() if "lora_" in n)
    plain = load_policy("local:smollm2-sleuth")  # no LoRA asked: the adapter is merged
    assert not hasattr(plain.model, "peft_config")
    assert all(torch.allclose(plain.model.state_dict()[k], weights[k], atol=1e-6) for k in weights)


def test_sft_lowers_loss_on_kept_completions_and_offline_grpo_runs(toy_policy, small_world,
                                                                    toy_kb, tmp_path):
    policy = toy_policy()
    store = TrajectoryStore(tmp_path / "runs")
    research_many(small_world.tasks[:2], samples_per_task=4, model=policy, knowledge=toy_kb,
                  store=store, config=TOY.model_copy(update={"max_new_tokens": 6, "seed": 3,
                                                             "temperature": 1.0}))
    kept = build_samples(store, even_first_tokens, min_reward=0.5)

    def nll() -> float:
        with torch.no_grad():
            total = sum(-completion_logps(policy.model, s, 1.0).sum().item() for s in kept)
        return total / sum(len(s.completion_ids) for s in kept)

    before = nll()
    stats = train_sft(store, model=policy, reward=even_first_tokens, min_reward=0.5,
                      output_dir=tmp_path / "sft", max_steps=6, learning_rate=2e-3)
    assert stats["samples"] == len(kept) and stats["last_loss"] < stats["first_loss"]
    assert nll() < before
    assert (tmp_path / "sft" / "config.json").exists()
    result = train_grpo_offline(list(store), model=toy_policy(), reward=even_first_tokens,
                                output_dir=tmp_path / "offline",
                                args=grpo_config(tmp_path / "offline", learning_rate=1e-3,
                                                 temperature=1.0))
    assert result["updates"][0]["trained_samples"] > 0 and (tmp_path / "offline" / "config.json").exists()


def test_train_cli_errors(sleuth):
    proc = sleuth("train", "sft", "--trajectories", "/no/such/store", "--output", "/tmp/x", check=False)
    assert proc.returncode != 0 and "sleuth record" in proc.stderr
    proc = sleuth("train", "grpo", "--output", "/tmp/x", check=False)
    assert proc.returncode != 0 and "--world-seed" in proc.stderr


def test_train_cli_holds_out_its_evaluation_world(sleuth_in_process, tmp_path):
    proc = sleuth_in_process("train", "grpo", "--world-seed", "2", "--eval-every", "1",
                             "--output", str(tmp_path / "x"), check=False)
    assert proc.returncode == 1 and "held-out world" in proc.stderr and "--eval-tasks" in proc.stderr


@pytest.mark.slow
def test_real_smollm2_lora_grpo_step(smollm2, small_world, world_kb, tmp_path):
    out = tmp_path / "smol"
    rows = []
    train_grpo(small_world.tasks[:1], model="local:smollm2", output_dir=out, lora=True,
               knowledge=world_kb, group_size=2, batch_tasks=1, on_step=rows.append,
               research=ResearchConfig(max_rounds=1, max_attempts=1, max_new_tokens=24),
               args=grpo_config(out, max_steps=1, save_steps=0, learning_rate=1e-4))
    assert rows and rows[0]["rollouts"] == 2 and (out / "adapter").exists()


@pytest.mark.slow
def test_smollm2_sleuth_continues_training_its_shipped_adapter():
    from safetensors.torch import load_file

    from agents.models import SLEUTH_ADAPTER

    shipped = load_file(SLEUTH_ADAPTER / "adapter_model.safetensors")
    chat = load_policy("local:smollm2-sleuth", peft_config=lora_config(16))
    state = _lora_state(chat.model)
    assert state.keys() == shipped.keys()
    assert all(torch.equal(state[k], shipped[k]) for k in state)  # continued, not restarted
    trainable = [n for n, p in chat.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # one adapter, the only thing trained


def test_sft_learns_from_a_model_that_records_no_token_ids(toy_policy, small_world, toy_kb, tmp_path):
    """An API model (here: scripted) records text only; SFT tokenises it for the student."""
    from scripted import ScriptedChatModel

    store = TrajectoryStore(tmp_path / "teacher")
    research_many(small_world.tasks[:2], model=ScriptedChatModel(), knowledge=toy_kb,
                  store=store, config=ResearchConfig(search_mode="fts", max_rounds=1))
    assert all(s.completion_token_ids is None for t in store for s in t.model_steps)
    stats = train_sft(store, model=toy_policy(), reward=lambda t, task=None: 1.0,
                      min_reward=0.5, output_dir=tmp_path / "student", max_steps=2,
                      learning_rate=1e-3)
    assert stats["samples"] == sum(len(t.model_steps) for t in store)
    budget = train_sft(store, model=toy_policy(), reward=lambda t, task=None: 1.0,
                       min_reward=0.5, output_dir=tmp_path / "budget", max_steps=5,
                       time_budget_s=1e-3)
    assert budget["steps"] == 1  # the wall-clock budget stops training after its first step


def test_balance_roles_repeats_the_rarer_roles_up_to_the_commonest():
    def sample(role: str, i: int) -> Sample:
        return Sample(trajectory_id=f"t{i}", task_id=None, group_id=None, role=role, model="m",
                      prompt_ids=[1], completion_ids=[i], logprobs=[0.0], reward=1.0)

    rows = [sample("planner", i) for i in range(6)] + [sample("writer", 10 + i) for i in range(2)]
    balanced = balance_roles(rows)
    writers = [s.completion_ids[0] for s in balanced if s.role == "writer"]
    assert len(balanced) == 12 and writers == [10, 11, 10, 11, 10, 11]
    assert [s.completion_ids[0] for s in balanced if s.role == "planner"] == list(range(6))
    assert balance_roles([]) == []


def test_training_only_the_top_layers_freezes_the_rest_of_the_adapter_for_a_while(toy_policy):
    from training.policy import top_layers, trainable_parameters, training_only_layers

    chat = load_policy(toy_policy(), peft_config=lora_config(4))
    names = [n for n, p in chat.model.named_parameters() if p.requires_grad]
    assert {n.split(".layers.")[1].split(".")[0] for n in names} == {"0", "1"}
    before = {n: p.detach().clone() for n, p in chat.model.named_parameters() if p.requires_grad}
    with training_only_layers(chat, top_layers(chat, 1)) as left:
        assert left == len(names) // 2 == len(trainable_parameters(chat))
        optimizer = torch.optim.SGD(trainable_parameters(chat), lr=1.0)
        ids = torch.tensor([[1, 2, 3, 4]])
        chat.model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    moved = {n.split(".layers.")[1].split(".")[0] for n, p in chat.model.named_parameters()
             if n in before and not torch.equal(p, before[n])}
    assert moved == {"1"}  # the lower layer's adapter kept the warm start's weights
    assert [n for n, p in chat.model.named_parameters() if p.requires_grad] == names  # restored
    with pytest.raises(ValueError, match="no trainable weight"), training_only_layers(chat, [7]):
        pass
    assert [n for n, p in chat.model.named_parameters() if p.requires_grad] == names


def test_lora_on_the_top_layers_adapts_only_those_and_backward_stops_below(toy_policy):
    from training.policy import top_layers

    assert top_layers(toy_policy(), 1) == [1]  # the toy has 2 decoder layers
    with pytest.raises(ValueError, match="between 1 and"):
        top_layers(toy_policy(), 3)
    chat = load_policy(toy_policy(), peft_config=lora_config(4, top_layers(toy_policy(), 1)))
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in chat.model.named_parameters()
               if p.requires_grad}
    assert adapted == {"1"}
    seen: dict[int, bool] = {}  # layer -> whether its output takes part in the backward pass
    for i, layer in enumerate(chat.model.base_model.model.model.layers):
        layer.register_forward_hook(lambda _m, _in, out, i=i: seen.__setitem__(
            i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    ids = torch.tensor([[1, 2, 3, 4]])
    chat.model(input_ids=ids, labels=ids).loss.backward()
    assert seen == {0: False, 1: True}
