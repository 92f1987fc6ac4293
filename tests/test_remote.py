"""The OpenAI-compatible engine against a small fake vLLM server on loopback."""

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from langchain_core.messages import HumanMessage

from agents import LocalChatModel
from agents.decoding import GenerationRequest
from agents.remote import OpenAISampler, RemoteSamplerError
from training.data import Sample
from training.grpo import completion_logps
from training.policy import lora_config


class FakeVLLM(ThreadingHTTPServer):
    """Serves `/v1/completions` from a tiny model (exact logprobs) and loads LoRA adapters
    at `/v1/load_lora_adapter`, as vLLM does; `plain_tokens` answers with token strings."""

    def __init__(self, base, tokenizer):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tokenizer, self.plain_tokens = tokenizer, False
        self.models = {"tiny": LocalChatModel(model=copy.deepcopy(base), tokenizer=tokenizer)}
        self.base, self.loaded = base, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv: FakeVLLM = self.server  # type: ignore[assignment]
        if self.path == "/v1/load_lora_adapter":
            from peft import PeftModel

            model = PeftModel.from_pretrained(copy.deepcopy(srv.base), body["lora_path"]).eval()
            srv.models[body["lora_name"]] = LocalChatModel(model=model, tokenizer=srv.tokenizer)
            srv.loaded.append(body["lora_name"])
            return self._send(200, "Success")
        if body["model"] not in srv.models:
            return self._send(404, {"error": f"model {body['model']} not found"})
        req = GenerationRequest(prompt_ids=body["prompt"], seed=body["seed"],
                                temperature=body["temperature"], top_p=body["top_p"],
                                max_new_tokens=body["max_tokens"], min_new_tokens=body["min_tokens"],
                                stop=body.get("stop") or [])
        srv.models[body["model"]].sampler.submit(req).result()
        out = req.result
        tokens = ([f"token_id:{t}" for t in out.token_ids] if not srv.plain_tokens
                  else srv.tokenizer.convert_ids_to_tokens(out.token_ids))
        self._send(200, {"choices": [{"text": out.text, "finish_reason": out.finish_reason,
                                      "logprobs": {"tokens": tokens, "token_logprobs": out.logprobs}}]})

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server(make_tiny_policy):
    base = make_tiny_policy(seed=5, initializer_range=0.3).model
    srv = FakeVLLM(base, make_tiny_policy(seed=5).tokenizer)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


def _trainer_logps(model, reply, temperature):
    m = reply.response_metadata
    sample = Sample("t", None, None, "writer", "m", m["prompt_token_ids"], m["completion_token_ids"],
                    m["logprobs"], 0.0)
    with torch.no_grad():
        return completion_logps(model, sample, temperature)


def test_rollouts_come_from_the_server_and_follow_the_trained_adapter(server):
    from peft import get_peft_model

    policy = get_peft_model(copy.deepcopy(server.base), lora_config(4))
    chat = LocalChatModel(model=policy, tokenizer=server.tokenizer, engine="openai", temperature=0.7,
                          max_new_tokens=8, engine_options={"base_url": server.url, "served_model": "tiny"})
    try:
        first = chat.invoke([HumanMessage("Where?")], seed=3)
        logps = first.response_metadata["logprobs"]
        assert chat.sampler.exact is False and len(logps) > 0
        torch.testing.assert_close(torch.tensor(logps), _trainer_logps(policy, first, 0.7),
                                   atol=1e-4, rtol=1e-4)
        with torch.no_grad():  # "an update": the adapter now changes the model
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        chat.weights_changed()
        second = chat.invoke([HumanMessage("Where?")], seed=3)
        assert server.loaded == ["sleuth-1"] == chat.sampler.pushes
        torch.testing.assert_close(torch.tensor(second.response_metadata["logprobs"]),
                                   _trainer_logps(policy, second, 0.7), atol=1e-4, rtol=1e-4)
        assert second.response_metadata["logprobs"] != logps
    finally:
        chat.close()


def test_a_server_without_token_ids_or_a_full_model_push_is_a_clear_error(server):
    sampler = OpenAISampler(server.url, "tiny", server.tokenizer, model=server.base)
    ids = server.tokenizer("Where?")["input_ids"]
    try:
        server.plain_tokens = True
        with pytest.raises(RemoteSamplerError, match="return_tokens_as_token_ids"):
            sampler.submit(GenerationRequest(prompt_ids=ids, max_new_tokens=4)).result()
        server.plain_tokens = False
        sampler.weights_changed()
        with pytest.raises(RemoteSamplerError, match="LoRA adapter"):
            sampler.submit(GenerationRequest(prompt_ids=ids, max_new_tokens=4)).result()
    finally:
        sampler.close()


def test_the_openai_engine_needs_its_server():
    from agents.engines import make_sampler

    with pytest.raises(ValueError, match="base_url"):
        make_sampler("openai", None, None)
