"""Batched sampling with per-request generators, exact logprobs and a prefix KV cache.

Why not `model.generate`: it samples a batch from one global RNG (a request's tokens would
then depend on what it was batched with), and it cannot start a batch from a shared cached
prefix. Here each request samples from its own `torch.Generator`, the KV cache of a static
prompt prefix (instructions + worked examples) is computed once per prefix and reused by
every call of that role, and finished rows are dropped from the batch as they end.

Calls of different roles (different prefixes, or none) share one batch. Row i, with a cached
prefix of P_i tokens, the longest prefix P and the longest suffix S:
    [zeros (P - P_i) | prefix_i KV | padding | suffix_i]   mask 0 / 1 / 0 / 1
positions run 0..P_i-1 over the prefix and continue from P_i over the suffix, so every row
computes exactly what it would compute alone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache


@dataclass
class GenerationOutput:
    """What one request produced."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (end of turn or stop string) | "length"


@dataclass
class GenerationRequest:
    """One prompt to complete, with its sampling parameters."""

    prompt_ids: list[int]
    prefix_len: int = 0
    seed: int = 0
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    result: GenerationOutput | None = None


class PrefixCache:
    """An LRU of batch-1 KV caches keyed by the token ids of a prompt prefix."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, model: torch.nn.Module, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The per-layer (keys, values) of the prefix, computed on a miss."""
        if prefix in self.entries:
            self.hits += 1
            self.entries.move_to_end(prefix)
            return self.entries[prefix]
        self.misses += 1
        cache = DynamicCache()
        model(input_ids=torch.tensor([prefix]), cache=cache, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        self.entries[prefix] = kv
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return kv

    def clear(self) -> None:
        """Forget every prefix (call after the weights change)."""
        self.entries.clear()


def _eos_ids(tokenizer: object, model: torch.nn.Module) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)  # type: ignore[attr-defined]
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None) and tid >= 0:
            ids.add(tid)
    return ids


def _sample(logits: torch.Tensor, req: GenerationRequest, gen: torch.Generator) -> tuple[int, float]:
    """Draw one token; return it with its logprob under softmax(logits / T), pre top-p."""
    logits = logits.float()
    if req.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(torch.argmax(logits))
        return tok, float(logp[tok])
    logp = torch.log_softmax(logits / req.temperature, dim=-1)
    probs = logp.exp()
    if req.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < req.top_p
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = sorted_p[keep]
        probs = filtered
    tok = int(torch.multinomial(probs, 1, generator=gen))
    return tok, float(logp[tok])


class Batcher:
    """A worker thread that gathers concurrent requests and decodes them together."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, *, window_s: float = 0.005,
                 max_batch: int = 8, prefix_cache_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.window_s = window_s
        self.max_batch = max_batch
        self.prefixes = PrefixCache(prefix_cache_size)
        self.eos = _eos_ids(tokenizer, model)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else min(self.eos or {0})
        self.max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", 1 << 20)
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[tuple[GenerationRequest, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sleuth-decode")
        self._thread.start()

    def submit(self, req: GenerationRequest) -> Future:
        """Queue a request; the future resolves when `req.result` is set."""
        if len(req.prompt_ids) + req.max_new_tokens > self.max_positions:
            raise ValueError(f"prompt of {len(req.prompt_ids)} tokens + {req.max_new_tokens} new "
                             f"tokens exceeds the model's context of {self.max_positions}")
        fut: Future = Future()
        self._queue.put((req, fut))
        return fut

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                self.run([r for r, _ in batch])
            except BaseException as e:  # noqa: BLE001 - the callers get the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for _, fut in batch:
                fut.set_result(None)

    @torch.no_grad()
    def run(self, reqs: list[GenerationRequest]) -> None:
        """Decode a batch of requests (with or without cached prefixes); sets `req.result`."""
        self.batch_sizes.append(len(reqs))
        kvs: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        for r in reqs:
            usable = 0 < r.prefix_len < len(r.prompt_ids)  # a suffix must remain to decode
            kvs.append(self.prefixes.get(self.model, tuple(r.prompt_ids[:r.prefix_len]))
                       if usable else None)
        plen = [r.prefix_len if kv is not None else 0 for r, kv in zip(reqs, kvs, strict=True)]
        suffixes = [r.prompt_ids[n:] for r, n in zip(reqs, plen, strict=True)]
        B, P, S = len(reqs), max(plen), max(len(s) for s in suffixes)
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, P + S), dtype=torch.long)
        pos = torch.ones((B, S), dtype=torch.long)
        for i, (s, n) in enumerate(zip(suffixes, plen, strict=True)):
            ids[i, S - len(s):] = torch.tensor(s)
            mask[i, P - n:P] = 1
            mask[i, P + S - len(s):] = 1
            pos[i, S - len(s):] = torch.arange(n, n + len(s))
        cache = DynamicCache()
        if P:
            cache = DynamicCache(ddp_cache_data=self._stack_prefixes(kvs, plen, P))
        gens = [torch.Generator().manual_seed(r.seed) for r in reqs]
        outs: list[list[int]] = [[] for _ in reqs]
        lps: list[list[float]] = [[] for _ in reqs]
        finish = [""] * B
        alive = list(range(B))  # request index of each row still in the batch
        next_pos = pos[:, -1] + 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1, :]
        while alive:
            keep, new_tokens = [], []
            for row, i in enumerate(alive):
                tok, lp = _sample(logits[row], reqs[i], gens[i])
                outs[i].append(tok)
                lps[i].append(lp)
                if tok in self.eos:
                    finish[i] = "stop"
                elif reqs[i].stop and self._hit_stop(outs[i], reqs[i].stop):
                    finish[i] = "stop"
                elif len(outs[i]) >= reqs[i].max_new_tokens:
                    finish[i] = "length"
                else:
                    keep.append(row)
                    new_tokens.append(tok)
            if not keep:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx)
                mask, next_pos = mask[idx], next_pos[idx]
                alive = [alive[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
            logits = self.model(input_ids=torch.tensor(new_tokens).unsqueeze(1),
                                attention_mask=mask, position_ids=next_pos.unsqueeze(1),
                                cache=cache, use_cache=True).logits[:, -1, :]
            next_pos = next_pos + 1
        for i, r in enumerate(reqs):
            text = self.tokenizer.decode(outs[i], skip_special_tokens=True)  # type: ignore[attr-defined]
            r.result = GenerationOutput(token_ids=outs[i], logprobs=lps[i], text=text,
                                        finish_reason=finish[i] or "length")

    @staticmethod
    def _stack_prefixes(kvs: list, plen: list[int], P: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the rows' prefix keys/values left-padded with zeros to P positions
        (the attention mask hides the padding)."""
        template = next(kv for kv in kvs if kv is not None)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            ks, vs = [], []
            for kv, n in zip(kvs, plen, strict=True):
                k = torch.zeros((1, k0.shape[1], P, k0.shape[3]), dtype=k0.dtype)
                v = torch.zeros((1, v0.shape[1], P, v0.shape[3]), dtype=v0.dtype)
                if kv is not None:
                    k[:, :, P - n:] = kv[layer][0]
                    v[:, :, P - n:] = kv[layer][1]
                ks.append(k)
                vs.append(v)
            layers.append((torch.cat(ks), torch.cat(vs)))
        return layers

    def _hit_stop(self, ids: list[int], stops: list[str]) -> bool:
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=True)  # type: ignore[attr-defined]
        return any(s in tail for s in stops)
