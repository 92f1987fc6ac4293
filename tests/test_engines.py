"""Rollout engines: the CTranslate2 sampler against the trainer's own logprobs (tiny Llama)."""

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from agents.decoding import GenerationRequest
from agents.engines import make_sampler
from training.data import Sample
from training.grpo import completion_logps

pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def policy(make_tiny_policy):
    return make_tiny_policy(seed=3, initializer_range=0.3, max_new_tokens=12)


def _request(policy, temperature: float, seed: int = 1, question: str = "Where?",
             **kw) -> GenerationRequest:
    ids, prefix = policy.encode_prompt([SystemMessage("Answer briefly."), HumanMessage(question)])
    return GenerationRequest(prompt_ids=ids, prefix_len=prefix, seed=seed, temperature=temperature,
                             max_new_tokens=12, **kw)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_ct2_logprobs_follow_the_trainers_convention(policy, temperature):
    from agents.ct2 import CT2Sampler

    sampler = CT2Sampler(policy.model, policy.tokenizer, quantization="float32")
    questions = ("Where?", "Where was the director of The Iron Harbour born?", "Who wrote it, then?")
    reqs = [_request(policy, temperature, seed=i, question=q) for i, q in enumerate(questions)]
    try:  # prompts of different lengths decoded in one batch
        for fut in [sampler.submit(r) for r in reqs]:
            fut.result(timeout=300)
    finally:
        sampler.close()
    assert max(sampler.batch_sizes) > 1
    for req in reqs:
        out = req.result
        assert len(out.token_ids) == len(out.logprobs) > 0
        sample = Sample("t", None, None, "writer", "m", req.prompt_ids, out.token_ids, out.logprobs, 0.0)
        with torch.no_grad():
            ours = completion_logps(policy.model, sample, temperature or 1.0)
        torch.testing.assert_close(torch.tensor(out.logprobs), ours, atol=2e-4, rtol=1e-4)
        assert out.text == policy.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_the_int8_engine_runs_a_chat_model_and_resyncs_after_an_update(make_tiny_policy):
    chat = make_tiny_policy(seed=4, initializer_range=0.3, max_new_tokens=8, engine="ct2-int8",
                            temperature=0.0)
    try:
        first = chat.invoke([HumanMessage("Where?")])
        meta = first.response_metadata
        assert len(meta["completion_token_ids"]) == len(meta["logprobs"]) > 0
        assert chat.sampler.exact is False and len(chat.sampler.sync_s) == 1
        with torch.no_grad():
            for p in chat.model.parameters():
                p.mul_(-1.0)  # a very different policy
        chat.weights_changed()
        second = chat.invoke([HumanMessage("Where?")])
        assert len(chat.sampler.sync_s) == 2  # converted again before decoding
        assert second.response_metadata["completion_token_ids"] != meta["completion_token_ids"]
        with pytest.raises(AttributeError, match="ct2-int8"):
            chat.batcher  # noqa: B018
    finally:
        chat.close()


def test_a_failed_weight_sync_fails_requests_until_the_weights_change(policy, monkeypatch):
    from agents.ct2 import CT2Sampler
    from agents.decoding import GenerationRequest

    sampler = CT2Sampler(policy.model, policy.tokenizer, quantization="float32")
    tries = []

    def broken():
        tries.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(sampler, "_sync", broken)
    ids = policy.tokenizer("Where?").input_ids
    try:
        for _ in range(3):  # one at a time: each is its own batch
            with pytest.raises(OSError, match="disk full"):
                sampler.submit(GenerationRequest(ids, max_new_tokens=4)).result(timeout=60)
        assert len(tries) == 1  # a conversion is not tried again for every batch
        sampler.weights_changed()
        with pytest.raises(OSError, match="disk full"):
            sampler.submit(GenerationRequest(ids, max_new_tokens=4)).result(timeout=60)
        assert len(tries) == 2  # new weights: tried again
    finally:
        sampler.close()


def test_stop_strings_end_a_ct2_completion(policy):
    from agents.ct2 import CT2Sampler

    sampler = CT2Sampler(policy.model, policy.tokenizer, quantization="float32")
    try:
        free = _request(policy, 0.0)
        sampler.submit(free).result(timeout=300)
        text = free.result.text
        assert len(free.result.token_ids) >= 4
        stop = policy.tokenizer.decode(free.result.token_ids[2:3], skip_special_tokens=True)
        stopped = _request(policy, 0.0, stop=[stop])
        sampler.submit(stopped).result(timeout=300)
    finally:
        sampler.close()
    assert stop in stopped.result.text and len(stopped.result.token_ids) <= 3
    assert stopped.result.finish_reason == "stop" and text.startswith(stopped.result.text)


def test_an_unknown_engine_is_named():
    with pytest.raises(ValueError, match="ct2-int8"):
        make_sampler("vllm-turbo", None, None)


def test_engine_options_are_checked_on_the_command_line(sleuth_in_process, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "q1", "question": "Where?", "answer": "Varo"}\n')
    proc = sleuth_in_process("eval", str(tasks), "--out", str(tmp_path / "o.json"),
                             "--engine", "warp-drive", check=False)
    assert proc.returncode != 0 and "ct2-int8" in proc.stderr
    proc = sleuth_in_process("train", "grpo", "--output", str(tmp_path / "run"), "--world-seed", "1",
                             "--world-tasks", "4", "--engine", "openai", "--steps", "1", check=False)
    assert proc.returncode != 0 and "base_url" in proc.stderr


def test_batches_share_a_prefix_and_a_length_band(policy):
    from agents.ct2 import plan_batches

    def req(n: int, prefix: int = 3, temperature: float = 0.0) -> GenerationRequest:
        return GenerationRequest(prompt_ids=[1, 2, 9][:prefix] + [5] * n, prefix_len=prefix,
                                 temperature=temperature)
    a, b, c, d = req(10), req(20), req(40), req(12, prefix=2)
    e = req(11, temperature=0.7)
    batches = plan_batches([c, a, d, b, e], length_tolerance=16)
    assert sorted(map(len, batches)) == [1, 1, 1, 2]
    assert [a, b] in batches and [c] in batches  # 10 and 20 within 16 tokens, 40 not
    assert [d] in batches and [e] in batches  # another prefix; another temperature


def test_each_request_keeps_its_own_length_in_a_shared_batch(policy):
    from agents.ct2 import CT2Sampler

    sampler = CT2Sampler(policy.model, policy.tokenizer, quantization="float32", window_s=0.2)
    short, long_ = _request(policy, 0.0), _request(policy, 0.0)
    short.max_new_tokens, long_.max_new_tokens = 3, 12
    try:
        for fut in [sampler.submit(short), sampler.submit(long_)]:
            fut.result(timeout=300)
    finally:
        sampler.close()
    assert sampler.batch_sizes == [2]
    assert len(short.result.token_ids) <= 3 and short.result.finish_reason in ("length", "stop")
    assert len(long_.result.token_ids) > 3  # not cut at the shorter one's end
    assert long_.result.token_ids[:3] == short.result.token_ids
    assert len(short.result.logprobs) == len(short.result.token_ids)


def test_requests_waiting_for_a_busy_thread_are_batched_together(policy, monkeypatch):
    import threading

    from agents.ct2 import CT2Sampler

    sampler = CT2Sampler(policy.model, policy.tokenizer, quantization="float32", parallel=1,
                         window_s=0.0)
    sampler._stale = False  # decoding is stubbed: nothing to convert
    release, seen = threading.Event(), []

    def decode(reqs):
        seen.append(len(reqs))
        release.wait(timeout=60)  # the first batch holds the only thread
        for r in reqs:
            r.result = "done"
    monkeypatch.setattr(sampler, "_decode", decode)
    try:
        first = sampler.submit(_request(policy, 0.0))
        for _ in range(100):  # until the first batch holds the thread
            if seen:
                break
            threading.Event().wait(0.01)
        later = [sampler.submit(_request(policy, 0.0, seed=s)) for s in range(5)]
        release.set()
        for fut in [first, *later]:
            fut.result(timeout=60)
    finally:
        sampler.close()
    assert seen == [1, 5]  # the five that queued meanwhile decode as one batch


def test_in_memory_conversion_writes_what_the_converter_writes_from_disk(policy, tmp_path):
    import copy
    import gc

    import ctranslate2.converters.transformers as ct2_transformers
    from ctranslate2.converters import TransformersConverter

    from agents.ct2 import convert_in_memory

    policy.model.save_pretrained(tmp_path / "hf")
    policy.tokenizer.save_pretrained(tmp_path / "hf")
    TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "disk"), quantization="int8")
    convert_in_memory(copy.deepcopy(policy.model), policy.tokenizer, tmp_path / "memory", "int8")
    assert ct2_transformers.gc is gc  # the converter's module put back
    for name in ("model.bin", "config.json", "vocabulary.json"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "disk" / name).read_bytes()
