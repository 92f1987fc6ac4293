"""Truncated importance sampling for a sampler that is not the trainer (training/offpolicy.py)."""

import copy
import math

import pytest
import torch

from training.data import Sample
from training.grpo import completion_logps, grpo_config, update
from training.offpolicy import importance_weights


def test_importance_weights_are_bounded_in_every_mode():
    trainer = torch.tensor([-1.0, -0.5, -2.0])
    sampler = torch.tensor([-3.0, -0.5, -1.0])  # token ratios e^2, 1, e^-1
    tok = importance_weights(trainer, sampler, mode="token_truncate", clip_max=3.0)
    assert tok.tolist() == pytest.approx([3.0, 1.0, math.exp(-1)])
    assert importance_weights(trainer, sampler, mode="token_mask", clip_max=3.0).tolist() == \
        pytest.approx([0.0, 1.0, math.exp(-1)])
    seq = importance_weights(trainer, sampler, mode="sequence_truncate", clip_max=2.0)
    assert seq.tolist() == pytest.approx([2.0] * 3)  # e^(2 + 0 - 1) = e, truncated to 2
    assert importance_weights(trainer, sampler, mode="sequence_mask", clip_max=2.0).tolist() == [0.0] * 3
    assert importance_weights(trainer, trainer, mode="sequence_mask").tolist() == [1.0] * 3
    for mode in ("token_truncate", "sequence_truncate"):
        wild = importance_weights(torch.randn(50) * 5, torch.randn(50) * 5, mode=mode, clip_max=3.0)
        assert float(wild.max()) <= 3.0
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(trainer, sampler, mode="token")


def test_an_inexact_sampler_with_the_trainers_logprobs_gives_the_exact_step(make_tiny_policy, tmp_path):
    base = make_tiny_policy(seed=2).model
    prompt = list(range(200, 240))
    samples = [Sample("t", "q", "g", "writer", "m", prompt + [300 + i], [500 + i, 600 + i, 700], [], 0.0,
                      advantage=adv) for i, adv in enumerate((1.0, -0.5, 0.25))]
    with torch.no_grad():
        for s in samples:
            s.logprobs = completion_logps(base, s, 0.7).tolist()
    after = {}
    for exact in (True, False):
        model = copy.deepcopy(base)
        args = grpo_config(tmp_path, temperature=0.7, max_grad_norm=1e9, num_iterations=2)
        stats = update(model, torch.optim.SGD(model.parameters(), lr=1.0), samples, args,
                       exact_sampler=exact)
        after[exact] = dict(model.named_parameters())
    assert stats["sampler_logp_gap"] < 1e-4 and stats["importance_kept"] == 1.0
    for name, p in after[True].items():
        torch.testing.assert_close(after[False][name], p, atol=1e-5, rtol=1e-4, msg=name)
    assert not torch.equal(after[True]["model.norm.weight"], base.model.norm.weight)
