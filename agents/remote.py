"""A rollout engine on an OpenAI-compatible server (vLLM, or anything that speaks its API).

Where a GPU serves the policy, rollouts are sampled there and training stays here: each
request goes to the server's completions endpoint as prompt token ids, asking for the
completion's token ids (`return_tokens_as_token_ids`, a vLLM extension) and each token's
logprob; after each update the trainer's LoRA adapter is saved and pushed to the server
(`/v1/load_lora_adapter`, vLLM's dynamic LoRA loading, which needs
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), and later requests name it as their model.

vLLM's kernels are not the trainer's, so its logprobs differ slightly (`exact = False`: the
trainer corrects with truncated importance sampling, `training.offpolicy`). Start vLLM with
`--logprobs-mode processed_logprobs` so that they are the logprobs of the distribution it
sampled from (after temperature), and train with top_p = 1. A full fine-tune cannot be pushed
this way: train a LoRA adapter (`peft_config=lora_config(...)`).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from agents.decoding import GenerationOutput, GenerationRequest


class RemoteSamplerError(RuntimeError):
    """The server's reply cannot be used for training (no token ids, no logprobs)."""


class OpenAISampler:
    """Requests completed by an OpenAI-compatible server, with token ids and logprobs.

    `model` is the trainer's live (PEFT) model, whose adapter is pushed after each update;
    adapters are saved under `adapter_dir` (a temporary folder by default), which the server
    must be able to read: the same machine, or a filesystem both share.
    """

    exact = False  # the server's kernels are not the trainer's

    def __init__(self, base_url: str, served_model: str, tokenizer: Any, *, model: Any = None,
                 api_key: str | None = None, max_concurrency: int = 16, timeout_s: float = 600,
                 adapter_dir: str | Path | None = None):
        self.base_url = base_url.rstrip("/")
        self.served_model, self.tokenizer, self.model = served_model, tokenizer, model
        self.current = served_model  # the model name requests use: the base, or the last adapter
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="sleuth-remote")
        self._adapters = Path(adapter_dir or tempfile.mkdtemp(prefix="sleuth-adapters-"))
        if adapter_dir is None:  # ours: removed with the sampler
            weakref.finalize(self, shutil.rmtree, self._adapters, True)
        self._versions = itertools.count(1)
        self._stale = False
        self._lock = threading.Lock()
        self.pushes: list[str] = []  # adapter names pushed, in order

    def submit(self, req: GenerationRequest) -> Future:
        """Send a request (from a worker thread); the future resolves when `req.result` is set."""
        return self._pool.submit(self._complete, req)

    def weights_changed(self) -> None:
        """The trainer updated the adapter: push it before the next request."""
        self._stale = True

    def close(self) -> None:
        """Finish the requests in flight and close the connection."""
        self._pool.shutdown(wait=True)
        self._http.close()

    # ------------------------------------------------------------------ requests

    def _complete(self, req: GenerationRequest) -> None:
        self._push_if_stale()
        body = {"model": self.current, "prompt": req.prompt_ids, "max_tokens": req.max_new_tokens,
                "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed % (1 << 31),
                "logprobs": 0, "return_tokens_as_token_ids": True, "skip_special_tokens": True,
                "include_stop_str_in_output": True, "min_tokens": req.min_new_tokens}
        if req.stop:
            body["stop"] = list(req.stop)
        resp = self._http.post("/completions", json=body)
        if resp.status_code != 200:
            raise RemoteSamplerError(f"{self.base_url}/completions answered {resp.status_code}: "
                                     f"{resp.text[:300]}")
        choice = resp.json()["choices"][0]
        ids, logprobs = _tokens_and_logprobs(choice)
        req.result = GenerationOutput(
            token_ids=ids, logprobs=logprobs,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop")

    # ------------------------------------------------------------------ weight sync

    def _push_if_stale(self) -> None:
        with self._lock:
            if not self._stale:
                return
            if self.model is None or not hasattr(self.model, "peft_config"):
                raise RemoteSamplerError("only a LoRA adapter can be pushed to the server: train "
                                         "with peft_config=lora_config(...)")
            name = f"sleuth-{next(self._versions)}"
            folder = self._adapters / name
            self.model.save_pretrained(folder)
            resp = self._http.post(_root(self.base_url) + "/v1/load_lora_adapter",
                                   json={"lora_name": name, "lora_path": str(folder)})
            if resp.status_code != 200:
                raise RemoteSamplerError(f"the server refused adapter {name} ({resp.status_code}: "
                                         f"{resp.text[:300]}); vLLM needs --enable-lora and "
                                         "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
            self.current, self._stale = name, False
            self.pushes.append(name)


def _root(base_url: str) -> str:
    """The server root of a `.../v1` base URL (the adapter endpoints live at /v1/...)."""
    return base_url[:-3] if base_url.endswith("/v1") else base_url


def _tokens_and_logprobs(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """Completion token ids and logprobs from a completions choice; clear errors otherwise."""
    lp = choice.get("logprobs") or {}
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if tokens is None or values is None:
        raise RemoteSamplerError("the server returned no logprobs: it must honour `logprobs`")
    if tokens and not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        raise RemoteSamplerError("the server returned token strings, not token ids: it must "
                                 "support `return_tokens_as_token_ids` (vLLM does)")
    return [int(t.split(":", 1)[1]) for t in tokens], [float(v) for v in values]
