"""Contrastive multi-task learning (CML) for the knowledge selector: the recipe's stage between
supervised fine-tuning and RL, teaching the policy to tell relevant knowledge from irrelevant.

Data: groups of (question, one gold passage, k distractors) from any task file with gold flags
(generated worlds, HotpotQA / 2Wiki / MuSiQue), the distractors taken first from the knowledge
base's own results for the question (hard ones: knowledge blending), then from the task's other
documents. Three objectives train together on the policy:

- contrastive: the selector's relevance score of a passage, the policy's log-odds of "yes" over
  "no" as the first token of its reply to the selector prompt, softmaxed across a group: the
  gold passage against its distractors (InfoNCE);
- classification: the same scores as yes/no logits against the gold flags (cross-entropy);
- blended writing: the writer's reply (in the format of the policy's own writer prompt: the
  answer and the gold passages cited) given the
  task's gold passages mixed with 0..k distractors in a shuffled order, so the writer learns to
  answer from the right passage among wrong ones.

TRL has no trainer for a contrastive objective over a chat model's verdict logits, so this is a
short torch loop (AdamW over the trainable parameters, a wall-clock budget, `metrics.jsonl`,
and the trackers `report_to` names, as `training.trackers` logs them for GRPO).
The saved policy's card says `judges_passages: true`; with `ResearchConfig(judge_passages=None)`
(the default) the selector then asks the model about each passage.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agents.models import LocalChatModel
from agents.prompting import brief, load_template, render_messages
from agents.writer import writer_reply
from tools import device as devices
from tools.types import Passage
from training.policy import is_peft, load_policy, save_policy, trainable_parameters
from training.rationales import chains_of
from training.trackers import MetricsLogger, report_targets, tensorboard_dir

VERDICTS = ("yes", "no")  # the selector prompt's two replies (agents/prompts/selector.jinja)
LEARNING_RATE = {False: 2e-5, True: 2e-4}  # full fine-tune, LoRA (as in SFT)


@dataclass
class SelectionGroup:
    """One gold passage of a question against k distractors, and what the writer should say."""

    question: str
    answer: str
    gold: Passage
    distractors: list[Passage]
    all_gold: list[Passage] = field(default_factory=list)  # every gold passage of the task
    rationale: list[tuple[str, str]] = field(default_factory=list)  # (fact, doc_id) per hop


@dataclass(frozen=True)
class CMLWeights:
    """How much each objective counts in the summed loss."""

    contrastive: float = 1.0
    classification: float = 1.0
    writer: float = 1.0


EQUAL = CMLWeights()

def _passage(doc: Mapping[str, Any]) -> Passage:
    return Passage(chunk_id=str(doc["doc_id"]), doc_id=str(doc["doc_id"]),
                   title=str(doc.get("title", "")), text=str(doc["text"]))


def selection_groups(tasks: Iterable[Mapping[str, Any]], *, knowledge: Any = None, k: int = 4,
                     seed: int = 0) -> list[SelectionGroup]:
    """A group per gold document of every task with gold flags: hard distractors from
    `knowledge.search(question)` first (non-gold documents only), then the task's own.
    `knowledge` may be a mapping from a task's `source` to its knowledge base."""
    rng = random.Random(seed)
    groups = []
    for task in tasks:
        docs = list(task.get("docs") or [])
        gold_ids = {d["doc_id"] for d in docs if d.get("gold")}
        if not gold_ids:
            continue
        pool: dict[str, Passage] = {}
        kb = knowledge.get(task.get("source")) if isinstance(knowledge, Mapping) else knowledge
        if kb is not None:
            for p in kb.search(task["question"], k=2 * k + len(gold_ids)):
                if p.doc_id not in gold_ids:
                    pool.setdefault(p.doc_id, p)
        own = [d for d in docs if not d.get("gold")]
        rng.shuffle(own)
        for d in own:
            pool.setdefault(d["doc_id"], _passage(d))
        if not pool:
            continue
        gold = [_passage(d) for d in docs if d.get("gold")]
        hops = [(h["fact"], h["doc_id"]) for chain in chains_of(task) for h in chain]
        for g in gold:
            groups.append(SelectionGroup(question=str(task["question"]), answer=str(task["answer"]),
                                         gold=g, distractors=list(pool.values())[:k],
                                         all_gold=gold, rationale=hops))
    rng.shuffle(groups)
    return groups


def verdict_ids(chat: LocalChatModel) -> tuple[int, int]:
    """The first token of "yes" and of "no" in the policy's vocabulary."""
    yes, no = (chat.tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VERDICTS)
    return yes, no


def judge_prompt(chat: LocalChatModel, question: str, passage: Passage) -> list[int]:
    """The selector's prompt for one passage, tokenised as the research graph sends it."""
    messages = render_messages(load_template("selector"), examples=chat.prompt_examples,
                               question=question, passage=brief(passage))
    return chat.encode_prompt(messages)[0]


def relevance_scores(chat: LocalChatModel, question: str,
                     passages: Sequence[Passage]) -> torch.Tensor:
    """log p(yes) - log p(no) for each passage's selector prompt (with gradients)."""
    prompts = [judge_prompt(chat, question, p) for p in passages]
    width = max(len(p) for p in prompts)
    pad = chat.tokenizer.pad_token_id or 0
    device = devices.of(chat.model)
    ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=device)
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=device)
    logits = chat.model(input_ids=ids, attention_mask=mask).logits.float()
    last = logits[torch.arange(len(prompts), device=device),
                  torch.tensor([len(p) - 1 for p in prompts], device=device)]
    logp = torch.log_softmax(last, dim=-1)
    yes, no = verdict_ids(chat)
    return logp[:, yes] - logp[:, no]


def blended_writer_sample(chat: LocalChatModel, group: SelectionGroup,
                          rng: random.Random) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of the writer answering from the task's gold passages mixed
    with a random number of the group's distractors, in a random order."""
    evidence = list(group.all_gold or [group.gold])
    evidence += rng.sample(group.distractors, rng.randint(0, len(group.distractors)))
    rng.shuffle(evidence)
    number = {p.doc_id: i for i, p in enumerate(evidence, 1)}
    if group.rationale:
        reasons = " ".join(f"{fact} [{number[doc]}]." for fact, doc in group.rationale
                           if doc in number)
    else:
        cited = " and ".join(f"{p.title} [{number[p.doc_id]}]" for p in group.all_gold or [group.gold])
        reasons = f"The answer is in {cited}."
    prompt_name = chat.prompts.get("writer")
    messages = render_messages(load_template(prompt_name or "writer"), examples=chat.prompt_examples,
                               question=group.question, evidence=[brief(p) for p in evidence])
    prompt = chat.encode_prompt(messages)[0]
    target = writer_reply(reasons, group.answer, prompt_name)
    completion = chat.tokenizer(target, add_special_tokens=False)["input_ids"]
    return prompt, completion + [chat.tokenizer.eos_token_id]


def _nll(chat: LocalChatModel, prompt: list[int], completion: list[int]) -> torch.Tensor:
    device = devices.of(chat.model)
    ids = torch.tensor([prompt + completion], device=device)
    logits = chat.model(input_ids=ids, logits_to_keep=len(completion) + 1).logits[0, :-1].float()
    return F.cross_entropy(logits, torch.tensor(completion, device=device))


def cml_loss(chat: LocalChatModel, groups: Sequence[SelectionGroup], rng: random.Random,
             weights: CMLWeights = EQUAL) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed objective over a batch of groups, and its parts (means) for the log."""
    parts: dict[str, list[torch.Tensor]] = {"contrastive": [], "classification": [], "writer": []}
    hits = 0
    for g in groups:
        scores = relevance_scores(chat, g.question, [g.gold, *g.distractors])
        labels = torch.zeros_like(scores)
        labels[0] = 1.0
        parts["contrastive"].append(F.cross_entropy(scores.unsqueeze(0),
                                                    torch.zeros(1, dtype=torch.long,
                                                                device=scores.device)))
        parts["classification"].append(F.binary_cross_entropy_with_logits(scores, labels))
        hits += int(scores.argmax().item() == 0)
        if weights.writer:
            parts["writer"].append(_nll(chat, *blended_writer_sample(chat, g, rng)))
    means = {k: torch.stack(v).mean() for k, v in parts.items() if v}
    loss = sum(getattr(weights, k) * v for k, v in means.items())
    log = {f"loss_{k}": float(v.detach()) for k, v in means.items()}
    log["gold_ranked_first"] = hits / max(1, len(groups))
    return loss, log  # type: ignore[return-value]


@torch.no_grad()
def selector_accuracy(chat: LocalChatModel, groups: Sequence[SelectionGroup]) -> dict[str, float]:
    """How often the gold passage scores highest in its group, and the yes/no accuracy of the
    model's verdicts (score > 0 means yes) over every passage."""
    first = right = total = 0
    for g in groups:
        scores = relevance_scores(chat, g.question, [g.gold, *g.distractors])
        first += int(scores.argmax().item() == 0)
        right += int(scores[0] > 0) + int((scores[1:] <= 0).sum().item())
        total += len(scores)
    return {"gold_ranked_first": first / max(1, len(groups)),
            "verdict_accuracy": right / max(1, total), "groups": len(groups)}


def train_cml(tasks: Iterable[Mapping[str, Any]], *, output_dir: str | Path,
              model: str | LocalChatModel = "local:smollm2", knowledge: Any = None,
              peft_config: Any = None, k: int = 4, groups_per_step: int = 2,
              learning_rate: float | None = None, max_steps: int = -1,
              time_budget_s: float | None = None, weights: CMLWeights = EQUAL,
              seed: int = 0, log: Any = None,
              report_to: str | Sequence[str] | None = "none") -> dict[str, Any]:
    """Train the selector's judgments (and the writer on blended evidence); save the policy
    with `judges_passages: true` in its card; returns the training stats. Each step's row goes
    to `output_dir/metrics.jsonl` and to the trackers `report_to` names ("tensorboard",
    "wandb", as in TrainingArguments)."""
    report_targets(report_to)  # a tracker named but not installed fails before the model loads
    if k < 1 or groups_per_step < 1:
        raise ValueError(f"CML needs k >= 1 distractors and groups_per_step >= 1, not {k} and "
                         f"{groups_per_step}")
    groups = selection_groups(tasks, knowledge=knowledge, k=k, seed=seed)
    if not groups:
        raise ValueError("no task has a gold document and a distractor: CML needs task files "
                         "whose docs carry gold flags (generated worlds, ../shared/data)")
    if max_steps < 0 and time_budget_s is None:
        max_steps = max(1, len(groups) // groups_per_step)  # one pass
    chat = load_policy(model, peft_config=peft_config)
    chat.model.train()
    params = trainable_parameters(chat)
    opt = torch.optim.AdamW(params, lr=learning_rate or LEARNING_RATE[is_peft(chat.model)])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng, t0, step, rows = random.Random(seed), time.perf_counter(), 0, []
    settings = {"k": k, "groups_per_step": groups_per_step, "max_steps": max_steps, "seed": seed,
                "learning_rate": opt.param_groups[0]["lr"], "weights": vars(weights)}
    with (out / "metrics.jsonl").open("a") as metrics, MetricsLogger(
            report_to, tensorboard_dir(out), config=settings) as trackers:
        while step != max_steps:
            batch = [groups[(step * groups_per_step + i) % len(groups)] for i in range(groups_per_step)]
            loss, row = cml_loss(chat, batch, rng, weights)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            row.update(step=step, loss=float(loss.detach()), seconds=time.perf_counter() - t0)
            rows.append(row)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            trackers.log(row)
            if log:
                log(f"cml step {step}: loss {row['loss']:.3f}, gold first {row['gold_ranked_first']:.2f}")
            if time_budget_s is not None and time.perf_counter() - t0 >= time_budget_s:
                break
    chat.model.eval()
    chat.judges_passages = True
    chat.close()  # the decoder must see the trained weights
    save_policy(chat, out)
    return {"groups": len(groups), "steps": step, "first_loss": rows[0]["loss"],
            "last_loss": rows[-1]["loss"], "seconds": round(time.perf_counter() - t0, 1),
            "output_dir": str(out)}


__all__ = ["CMLWeights", "SelectionGroup", "blended_writer_sample", "cml_loss", "judge_prompt",
           "relevance_scores", "selection_groups", "selector_accuracy", "train_cml", "verdict_ids"]
