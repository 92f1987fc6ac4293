"""Shared-prefix updates give the unshared update's logprobs and gradients (tiny Llama)."""

import copy
import random

import pytest
import torch

from training.data import Sample
from training.grpo import completion_logps, grpo_config, update
from training.policy import lora_config
from training.shared_prefix import SharedPrefix, common_prefix_length, prefix_tree


def _sample(role: str, prompt: list[int], rng: random.Random, advantage: float) -> Sample:
    completion = [rng.randrange(100, 5000) for _ in range(rng.randint(3, 9))]
    return Sample(trajectory_id="t", task_id="q", group_id="g", role=role, model="tiny",
                  prompt_ids=prompt, completion_ids=completion,
                  logprobs=[-rng.uniform(5.0, 12.0) for _ in completion], reward=advantage,
                  advantage=advantage)


@pytest.fixture()
def samples() -> list[Sample]:
    """Three planner calls sharing 40 prompt tokens, two writer calls sharing 30, one searcher,
    and two more planner calls sharing the planner's 40 and 30 more (a nested prefix)."""
    rng = random.Random(0)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(100, 5000) for _ in range(n)]

    planner, writer, question = tokens(40), tokens(30), tokens(30)
    out = [_sample("planner", planner + [6000 + i] + tokens(5 + 3 * i), rng, adv)
           for i, adv in enumerate((0.5, -0.5, 1.0))]
    out += [_sample("writer", writer + [7000 + i] + tokens(4 + i), rng, adv)
            for i, adv in enumerate((0.75, -0.25))]
    out.append(_sample("searcher", tokens(20), rng, -1.0))
    out += [_sample("planner", planner + question + [8000 + i] + tokens(4), rng, adv)  # nested
            for i, adv in enumerate((0.3, -0.6))]
    return out


def test_prompts_form_a_tree_of_shared_prefixes(samples):
    tree = prefix_tree(samples)
    assert tree.prefix == [] and tree.members == [5]  # the lone searcher runs whole
    by_len = {len(c.prefix): c for c in tree.children}
    assert sorted(by_len) == [30, 40]
    assert by_len[40].members == [0, 1, 2] and by_len[30].members == [3, 4]
    (nested,) = by_len[40].children
    assert nested.prefix == samples[6].prompt_ids[:70] and nested.members == [6, 7]
    assert tree.shared_tokens() == 40 * 4 + 30 * 1 + 30 * 1 and tree.nodes() == 3
    assert prefix_tree(samples, min_shared=35).nodes() == 1  # only the 40 shared tokens pay
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2


def test_a_prefix_never_swallows_a_whole_prompt(samples):
    a, b = copy.copy(samples[0]), copy.copy(samples[0])
    b.completion_ids = [11, 12]
    (node,) = prefix_tree([a, b]).children
    assert len(node.prefix) == len(a.prompt_ids) - 1 and node.members == [0, 1]


def test_suffix_logprobs_equal_the_whole_calls(tiny_model, samples):
    model = tiny_model.model
    with torch.no_grad():
        shared = SharedPrefix(model, samples[0].prompt_ids[:40])
        for s in samples[:3]:
            torch.testing.assert_close(shared.completion_logps(s, 0.7), completion_logps(model, s, 0.7),
                                       atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="shared prefix"):
            shared.completion_logps(samples[3], 0.7)
        nested = SharedPrefix(model, samples[6].prompt_ids[:70], parent=shared)
        for s in samples[6:]:
            torch.testing.assert_close(nested.completion_logps(s, 0.7), completion_logps(model, s, 0.7),
                                       atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="parent"):
            SharedPrefix(model, samples[3].prompt_ids[:35], parent=shared)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_shared_update_gives_the_same_step(make_tiny_policy, samples, tmp_path, lora):
    from peft import get_peft_model

    base = make_tiny_policy(seed=1).model
    if lora:
        base = get_peft_model(base, lora_config(4))
        with torch.no_grad():  # B starts at zero; give the adapter a non-trivial state
            for name, p in base.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    models = {share: copy.deepcopy(base) for share in (False, True)}
    before = {n: p.detach().clone() for n, p in base.named_parameters() if p.requires_grad}
    for share, model in models.items():
        args = grpo_config(tmp_path, lora=lora, share_prefix=share, max_grad_norm=1e9,
                           temperature=0.7)
        params = [p for p in model.parameters() if p.requires_grad]
        update(model, torch.optim.SGD(params, lr=1.0), samples, args)
    after = {share: dict(m.named_parameters()) for share, m in models.items()}
    moved = 0
    for name, p0 in before.items():
        torch.testing.assert_close(after[True][name].detach(), after[False][name].detach(),
                                   atol=1e-5, rtol=1e-4, msg=name)
        moved += not torch.equal(after[True][name].detach(), p0)
    assert moved >= len(before) // 2  # the step really changed the weights
