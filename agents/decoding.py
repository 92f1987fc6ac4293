"""Batched sampling with per-request generators, exact logprobs and a prefix KV cache.

Why not `model.generate`: it samples a batch from one global RNG (a request's tokens would
then depend on what it was batched with), and it cannot start a batch from a shared cached
prefix. Here each request samples from its own `torch.Generator`, the KV cache of a static
prompt prefix (instructions + worked examples) is computed once per prefix and reused by
every call of that role, requests join a running batch at the next decode step (continuous
batching), and finished rows leave it (and their callers are answered) as they end.

Calls of different roles (different prefixes, or none) share one batch. Row i, with a cached
prefix of P_i tokens, the longest prefix P and the longest suffix S:
    [zeros (P - P_i) | prefix_i KV | padding | suffix_i]   mask 0 / 1 / 0 / 1
positions run 0..P_i-1 over the prefix and continue from P_i over the suffix, so every row
computes exactly what it would compute alone.

Caches are handled as per-layer (keys, values) tensors through `agents.kvcache`, the one
module that knows transformers' cache API. Tensors live on the model's device; sampling
runs on CPU from each step's logprobs, so a request's tokens depend only on its seed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from agents import kvcache
from tools import device as devices


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
    min_new_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    result: GenerationOutput | None = None


class PrefixCache:
    """An LRU of batch-1 KV caches keyed by the token ids of a prompt prefix."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[tuple[int, ...], list[kvcache.KV]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, model: torch.nn.Module, prefix: tuple[int, ...]) -> list[kvcache.KV]:
        """The per-layer (keys, values) of the prefix, computed on a miss."""
        if prefix in self.entries:
            self.hits += 1
            self.entries.move_to_end(prefix)
            return self.entries[prefix]
        self.misses += 1
        cache = kvcache.empty()
        kvcache.forward(model, cache, input_ids=torch.tensor([prefix], device=devices.of(model)),
                        logits_to_keep=1)
        kv = kvcache.layers(cache)
        self.entries[prefix] = kv
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return kv

    def clear(self) -> None:
        """Forget every prefix (call after the weights change)."""
        self.entries.clear()


def eos_ids(tokenizer: object, model: object) -> set[int]:
    """The token ids that end a turn: the model's and tokenizer's end-of-sequence ids and the
    end-of-turn tokens of common chat templates."""
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


def hit_stop(tokenizer: object, ids: list[int], stops: list[str]) -> bool:
    """Whether the text of the last tokens contains a stop string."""
    tail = tokenizer.decode(ids[-16:], skip_special_tokens=True)  # type: ignore[attr-defined]
    return any(s in tail for s in stops)


def _sample(logp: torch.Tensor, req: GenerationRequest, gen: torch.Generator) -> int:
    """Draw one token from log-probabilities softmax(logits / T) (argmax when T = 0)."""
    if req.temperature <= 0:
        return int(torch.argmax(logp))
    probs = logp.exp()
    if req.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < req.top_p
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = sorted_p[keep]
        probs = filtered
    return int(torch.multinomial(probs, 1, generator=gen))


@dataclass
class _Row:
    """One request being decoded."""

    req: GenerationRequest
    fut: Future
    gen: torch.Generator
    next_pos: int = 0
    out: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)


def _pad_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Left-pad a tensor with zeros along `dim` to `length`."""
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


class Batcher:
    """A worker thread that decodes concurrent requests together (continuous batching).

    A request arriving while others decode joins the running batch at the next step: its
    prompt is prefilled on its own (from its cached prefix), then its KV cache is merged into
    the batch's, both left-padded with masked zeros to a common length. A row leaves the
    batch, and its caller is answered, as soon as it finishes.
    """

    exact = True  # logprobs from the trainer's own weights and kernels

    def __init__(self, model: torch.nn.Module, tokenizer: object, *, window_s: float = 0.005,
                 max_batch: int = 16, prefix_cache_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.window_s = window_s
        self.max_batch = max_batch
        self.prefixes = PrefixCache(prefix_cache_size)
        self.eos = eos_ids(tokenizer, model)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else min(self.eos or {0})
        self.max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", 1 << 20)
        self.batch_sizes: list[int] = []  # rows decoding together, after each admission
        self._queue: queue.Queue[tuple[GenerationRequest, Future] | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sleuth-decode")
        self._thread.start()

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (read each time: a trainer may move them)."""
        return devices.of(self.model)

    def weights_changed(self) -> None:
        """The model's weights changed: forget the prefixes cached under the old ones."""
        self.prefixes.clear()

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

    # ------------------------------------------------------------------ the loop

    def _take(self, block: bool, room: int) -> list[tuple[GenerationRequest, Future]]:
        """Up to `room` queued requests: when `block`, wait for a first one, then gather those
        arriving within the batch window; else only those already queued."""
        items: list[tuple[GenerationRequest, Future]] = []
        deadline = None
        while len(items) < room:
            try:
                if block and not items:
                    nxt = self._queue.get()
                    deadline = time.monotonic() + self.window_s
                elif deadline is not None:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._closed = True
                break
            items.append(nxt)
        return items

    def _loop(self) -> None:
        rows: list[_Row] = []
        cache: kvcache.Cache | None = None
        mask: torch.Tensor | None = None
        while not (self._closed and not rows):
            new = self._take(block=not rows, room=self.max_batch - len(rows))
            try:
                if new:
                    rows, cache, mask = self._admit(new, rows, cache, mask)
                    self.batch_sizes.append(len(rows))
                if rows:
                    rows, cache, mask = self._step(rows, cache, mask)
            except BaseException as e:  # noqa: BLE001 - the callers get the error
                for r in rows:
                    if not r.fut.done():
                        r.fut.set_exception(e)
                for _, fut in new:
                    if not fut.done():
                        fut.set_exception(e)
                rows, cache, mask = [], None, None

    # ------------------------------------------------------------------ prefill and step

    @torch.no_grad()
    def _admit(self, new: list[tuple[GenerationRequest, Future]], rows: list[_Row],
               cache: kvcache.Cache | None, mask: torch.Tensor | None,
               ) -> tuple[list[_Row], kvcache.Cache | None, torch.Tensor | None]:
        """Prefill new requests, sample their first token, merge them into the batch."""
        reqs = [r for r, _ in new]
        kvs: list[list[kvcache.KV] | None] = []
        for r in reqs:
            usable = 0 < r.prefix_len < len(r.prompt_ids)  # a suffix must remain to decode
            kvs.append(self.prefixes.get(self.model, tuple(r.prompt_ids[:r.prefix_len]))
                       if usable else None)
        plen = [r.prefix_len if kv is not None else 0 for r, kv in zip(reqs, kvs, strict=True)]
        suffixes = [r.prompt_ids[n:] for r, n in zip(reqs, plen, strict=True)]
        B, P, S = len(reqs), max(plen), max(len(s) for s in suffixes)
        dev = self.device
        ids = torch.full((B, S), self.pad_id, dtype=torch.long, device=dev)
        new_mask = torch.zeros((B, P + S), dtype=torch.long, device=dev)
        pos = torch.ones((B, S), dtype=torch.long, device=dev)
        for i, (s, n) in enumerate(zip(suffixes, plen, strict=True)):
            ids[i, S - len(s):] = torch.tensor(s, device=dev)
            new_mask[i, P - n:P] = 1
            new_mask[i, P + S - len(s):] = 1
            pos[i, S - len(s):] = torch.arange(n, n + len(s), device=dev)
        new_cache = kvcache.from_layers(self._stack_prefixes(kvs, plen, P)) if P else kvcache.empty()
        logits = kvcache.forward(self.model, new_cache, input_ids=ids, attention_mask=new_mask,
                                 position_ids=pos, logits_to_keep=1).logits[:, -1, :]
        admitted = [_Row(req=r, fut=f, gen=torch.Generator().manual_seed(r.seed),
                         next_pos=len(r.prompt_ids)) for r, f in new]
        keep = self._sample_all(admitted, logits)
        if not keep:
            return rows, cache, mask
        idx = torch.tensor(keep, device=dev)
        kvcache.select_rows(new_cache, idx)
        new_mask = new_mask[idx]
        admitted = [admitted[i] for i in keep]
        if not rows:
            return admitted, new_cache, new_mask
        assert cache is not None and mask is not None
        length = max(mask.shape[1], new_mask.shape[1])
        merged = [(torch.cat([_pad_left(k0, length, 2), _pad_left(k1, length, 2)]),
                   torch.cat([_pad_left(v0, length, 2), _pad_left(v1, length, 2)]))
                  for (k0, v0), (k1, v1) in zip(kvcache.layers(cache), kvcache.layers(new_cache),
                                                strict=True)]
        mask = torch.cat([_pad_left(mask, length, 1), _pad_left(new_mask, length, 1)])
        return rows + admitted, kvcache.from_layers(merged), mask

    @torch.no_grad()
    def _step(self, rows: list[_Row], cache: kvcache.Cache | None, mask: torch.Tensor | None,
              ) -> tuple[list[_Row], kvcache.Cache | None, torch.Tensor | None]:
        """Decode one token for every row; drop the rows that finish."""
        assert cache is not None and mask is not None
        dev = self.device
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long, device=dev)], dim=1)
        tokens = torch.tensor([[r.out[-1]] for r in rows], device=dev)
        positions = torch.tensor([[r.next_pos] for r in rows], device=dev)
        logits = kvcache.forward(self.model, cache, input_ids=tokens, attention_mask=mask,
                                 position_ids=positions).logits[:, -1, :]
        for r in rows:
            r.next_pos += 1
        keep = self._sample_all(rows, logits)
        if len(keep) < len(rows):
            if not keep:
                return [], None, None
            idx = torch.tensor(keep, device=dev)
            kvcache.select_rows(cache, idx)
            mask = mask[idx]
            rows = [rows[i] for i in keep]
            first = int(torch.nonzero(mask.any(dim=0))[0])  # drop columns no row attends to
            if first:
                mask = mask[:, first:]
                kvcache.drop_columns(cache, first)
        return rows, cache, mask

    def _sample_all(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Sample each row's next token; finish rows that end; return the indices that go on.

        Logprobs are taken under softmax(logits / T) before top-p (T = 1 for greedy rows),
        the distribution the trainer evaluates. Sampling runs on CPU (one copy of the
        logprobs per step), where each row's generator lives.
        """
        dev = logits.device
        temps = torch.tensor([[r.req.temperature if r.req.temperature > 0 else 1.0] for r in rows],
                             device=dev)
        logits = logits.float()
        early = [i for i, r in enumerate(rows) if len(r.out) < r.req.min_new_tokens]
        if early and self.eos:  # not allowed to end yet: the end-of-turn tokens are masked out
            logits[torch.tensor(early, device=dev).unsqueeze(1),
                   torch.tensor(sorted(self.eos), device=dev)] = float("-inf")
        logp = torch.log_softmax(logits / temps, dim=-1).cpu()  # no copy on CPU
        keep = []
        for i, r in enumerate(rows):
            tok = _sample(logp[i], r.req, r.gen)
            r.out.append(tok)
            r.lps.append(float(logp[i, tok]))
            if tok in self.eos or (r.req.stop and hit_stop(self.tokenizer, r.out, r.req.stop)):
                self._finish(r, "stop")
            elif len(r.out) >= r.req.max_new_tokens:
                self._finish(r, "length")
            else:
                keep.append(i)
        return keep

    def _finish(self, r: _Row, reason: str) -> None:
        text = self.tokenizer.decode(r.out, skip_special_tokens=True)  # type: ignore[attr-defined]
        r.req.result = GenerationOutput(token_ids=r.out, logprobs=r.lps, text=text,
                                        finish_reason=reason)
        r.fut.set_result(None)

    @staticmethod
    def _stack_prefixes(kvs: list, plen: list[int], P: int) -> list[kvcache.KV]:
        """Per layer, the rows' prefix keys/values left-padded with zeros to P positions
        (the attention mask hides the padding)."""
        template = next(kv for kv in kvs if kv is not None)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            ks, vs = [], []
            for kv, n in zip(kvs, plen, strict=True):
                k = torch.zeros((1, k0.shape[1], P, k0.shape[3]), dtype=k0.dtype, device=k0.device)
                v = torch.zeros((1, v0.shape[1], P, v0.shape[3]), dtype=v0.dtype, device=v0.device)
                if kv is not None:
                    k[:, :, P - n:] = kv[layer][0]
                    v[:, :, P - n:] = kv[layer][1]
                ks.append(k)
                vs.append(v)
            layers.append((torch.cat(ks), torch.cat(vs)))
        return layers

