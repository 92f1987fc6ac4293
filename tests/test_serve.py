"""`sleuth serve`: a policy behind an OpenAI-compatible API, called by real OpenAI clients.

The served model is a tiny random Llama (`make_tiny_policy`); every check compares what a
client gets over loopback with what the same `LocalChatModel` answers in process.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from agents import LocalChatModel, load_chat_model

pytest.importorskip("uvicorn", reason="the serve extra: pip install 'sleuth[serve]'")
pytest.importorskip("langchain_openai", reason="the openai extra: pip install 'sleuth[openai]'")
from langchain_openai import ChatOpenAI  # noqa: E402

from agents.serve import PolicyServer  # noqa: E402

MESSAGES = [SystemMessage("You answer questions."), HumanMessage("Where is the Eiffel Tower?")]
OPENAI_MESSAGES = [{"role": "system", "content": "You answer questions."},
                   {"role": "user", "content": "Where is the Eiffel Tower?"}]


@pytest.fixture(scope="module")
def policy(make_tiny_policy) -> LocalChatModel:
    # a wide batch window, so requests sent together from threads are decoded together
    chat = make_tiny_policy(seed=5, initializer_range=0.3, max_new_tokens=12, batch_window_ms=80)
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def server(policy):
    with PolicyServer(policy) as srv:
        yield srv


def greedy(policy: LocalChatModel, messages=MESSAGES, **kwargs):
    """What the policy itself answers, greedily."""
    return policy.invoke(messages, temperature=0, **kwargs)


def client(server: PolicyServer, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model=server.name, base_url=server.url, api_key="x", temperature=0,
                      max_retries=0, **kwargs)


def test_chat_openai_gets_the_policys_greedy_reply_with_logprobs_and_usage(server, policy):
    mine = greedy(policy)
    reply = client(server, logprobs=True).invoke(MESSAGES)
    assert reply.content == mine.content and reply.content
    meta = mine.response_metadata
    entries = reply.response_metadata["logprobs"]["content"]
    assert [e["logprob"] for e in entries] == pytest.approx(meta["logprobs"], abs=1e-5)
    assert [e["token"] for e in entries] == [policy.tokenizer.decode([t])
                                             for t in meta["completion_token_ids"]]
    assert reply.usage_metadata["input_tokens"] == len(meta["prompt_token_ids"])
    assert reply.usage_metadata["output_tokens"] == len(meta["completion_token_ids"]) == len(entries)
    assert reply.response_metadata["finish_reason"] == meta["finish_reason"]


def test_token_ids_come_back_exactly_with_vllms_extension(server, policy):
    mine = greedy(policy)
    reply = client(server, logprobs=True,
                   extra_body={"return_tokens_as_token_ids": True}).invoke(MESSAGES)
    ids = [int(e["token"].removeprefix("token_id:")) for e in reply.response_metadata["logprobs"]["content"]]
    assert ids == mine.response_metadata["completion_token_ids"]
    raw = bytes(b for e in reply.response_metadata["logprobs"]["content"] for b in e["bytes"])
    assert raw.decode("utf-8", errors="replace") == policy.tokenizer.decode(ids)  # exact bytes


def test_sleuths_own_openai_spec_reaches_the_server(server, policy, monkeypatch):
    mine = greedy(policy).content
    chat = load_chat_model(f"openai:{server.name}", base_url=server.url, api_key="x", temperature=0)
    assert chat.invoke(MESSAGES).content == mine
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # the OpenAI SDK's own setting
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    assert load_chat_model(f"openai:{server.name}", temperature=0).invoke(MESSAGES).content == mine


def test_streaming_gives_the_same_text_logprobs_and_usage(server, policy):
    mine = greedy(policy)
    chunks = list(client(server, logprobs=True, stream_usage=True).stream(MESSAGES))
    assert "".join(str(c.content) for c in chunks) == mine.content
    streamed = [e["logprob"] for c in chunks
                for e in (c.response_metadata.get("logprobs") or {}).get("content") or []]
    assert streamed == pytest.approx(mine.response_metadata["logprobs"], abs=1e-5)
    (last,) = [c for c in chunks if c.usage_metadata]
    assert last.usage_metadata["output_tokens"] == len(mine.response_metadata["completion_token_ids"])


def test_concurrent_requests_are_decoded_in_one_batch(server, policy):
    questions = [f"Question number {i}?" for i in range(4)]
    # min_tokens (vLLM's) keeps each row decoding for 32 steps: time enough for all to meet
    alone = [greedy(policy, [HumanMessage(q)], max_new_tokens=32, min_new_tokens=32).content
             for q in questions]
    before = len(policy.batcher.batch_sizes)
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        chat = client(server, max_tokens=32, extra_body={"min_tokens": 32})
        answers[i] = chat.invoke([HumanMessage(questions[i])]).content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [answers[i] for i in range(4)] == alone  # batched, each row as it decodes alone
    assert max(policy.batcher.batch_sizes[before:]) > 1


def post(server: PolicyServer, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(server.url + path, content=content, timeout=60, **kwargs)


def test_top_logprobs_stop_strings_seeds_and_n(server, policy):
    body = {"model": server.name, "messages": OPENAI_MESSAGES, "temperature": 0,
            "logprobs": True, "top_logprobs": 3}
    choice = post(server, "/chat/completions", body).json()["choices"][0]
    for e in choice["logprobs"]["content"]:  # greedy: the sampled token is the likeliest
        assert e["top_logprobs"][0]["token"] == e["token"] and len(e["top_logprobs"]) == 3
        assert e["top_logprobs"][0]["logprob"] == pytest.approx(e["logprob"], abs=1e-4)
    words = greedy(policy).content.split()
    stop = words[1]
    cut = post(server, "/chat/completions", {**body, "stop": [stop]}).json()
    mine = greedy(policy, stop=[stop])
    assert cut["choices"][0]["message"]["content"] == mine.content[:mine.content.index(stop)]
    assert cut["usage"]["completion_tokens"] == len(mine.response_metadata["completion_token_ids"])
    sampled = {"model": server.name, "messages": OPENAI_MESSAGES, "temperature": 1.0, "seed": 7, "n": 2}
    first, again = (post(server, "/chat/completions", sampled).json() for _ in range(2))
    texts = [c["message"]["content"] for c in first["choices"]]
    assert texts == [c["message"]["content"] for c in again["choices"]] and len(texts) == 2
    assert texts[0] == policy.invoke(MESSAGES, temperature=1.0, seed=7).content


@pytest.mark.parametrize("body,status,param", [
    ("{not json", 400, None),
    ({"model": "tiny-llama"}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages[0].content"),
    ({"messages": OPENAI_MESSAGES, "n": 9}, 400, "n"),
    ({"messages": OPENAI_MESSAGES, "temperature": -1}, 400, "temperature"),
    ({"messages": OPENAI_MESSAGES, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": OPENAI_MESSAGES, "top_logprobs": 2}, 400, "top_logprobs"),
    ({"messages": OPENAI_MESSAGES, "max_tokens": 100_000}, 400, "max_tokens"),
    ({"messages": OPENAI_MESSAGES, "model": "gpt-4o"}, 404, "model"),
    ([1, 2], 400, None),
])
def test_bad_requests_get_openai_shaped_errors(server, body, status, param):
    resp = post(server, "/chat/completions", body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param


def test_unknown_paths_and_the_openai_sdks_errors(server):
    resp = httpx.get(server.url + "/nowhere")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert httpx.get(server.url + "/models").json()["data"][0]["id"] == server.name
    import openai

    sdk = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="at least one message"):
        sdk.chat.completions.create(model=server.name, messages=[])


def test_an_api_key_is_required_when_set(policy):
    with PolicyServer(policy, api_key="secret", name="guarded") as srv:
        body = {"messages": OPENAI_MESSAGES, "max_tokens": 2}
        assert post(srv, "/chat/completions", body).status_code == 401
        ok = post(srv, "/chat/completions", body, headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200 and ok.json()["model"] == "guarded"


def test_the_openai_rollout_engine_samples_from_a_served_policy(server, policy):
    """`/v1/completions` speaks what agents.remote.OpenAISampler asks of vLLM."""
    remote = LocalChatModel(model=policy.model, tokenizer=policy.tokenizer, engine="openai",
                            max_new_tokens=12, engine_options={"base_url": server.url,
                                                               "served_model": server.name})
    try:
        got = remote.invoke(MESSAGES, temperature=0)
    finally:
        remote.close()
    mine = greedy(policy).response_metadata
    assert got.response_metadata["completion_token_ids"] == mine["completion_token_ids"]
    assert got.response_metadata["logprobs"] == pytest.approx(mine["logprobs"], abs=1e-5)


def test_the_sleuth_serve_command_serves_a_saved_policy(make_tiny_policy, tmp_path, sleuth):
    chat = make_tiny_policy(seed=5, initializer_range=0.3, max_new_tokens=8)
    chat.model.save_pretrained(tmp_path / "tiny")
    chat.tokenizer.save_pretrained(tmp_path / "tiny")
    proc = subprocess.Popen([sleuth.exe, "serve", "--model", f"hf:{tmp_path / 'tiny'}", "--port", "0",
                             "--name", "served-tiny"], stderr=subprocess.PIPE, text=True)
    try:
        line, deadline = "", time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert url, f"no URL in {line!r} (exit {proc.poll()})"
        reply = ChatOpenAI(model="served-tiny", base_url=url.group(0), api_key="x", temperature=0,
                           max_tokens=8, max_retries=0).invoke(MESSAGES)
        assert reply.content == greedy(chat).content
    finally:
        proc.terminate()
        proc.wait(30)
        chat.close()
