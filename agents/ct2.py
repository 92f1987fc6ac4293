"""CTranslate2 int8 sampling on the CPU: a rollout engine meant to be the fast one.

Alone, CTranslate2 decodes SmolLM2-135M in int8 several times faster than transformers in
fp32 on this CPU (../shared/FEASIBILITY.md), and prefills about twice as fast. The engine
converts the policy's weights (a LoRA adapter merged into a copy) to a CTranslate2 int8
model in memory (`convert_in_memory`: nothing written but the int8 model) and decodes
requests with `generate_batch` calls, each planned when a decoding thread is free from the
requests waiting then (so batches grow under load).
After the trainer changes the weights, `weights_changed()` marks the model stale and the next
batch converts and reloads it first (`sync_s` keeps each sync's seconds).

How requests are batched (`plan_batches`) decides its speed. `generate_batch` forwards a
batch's prompts at once only up to the shortest one; the rest of each longer prompt goes
through the decoding loop a token per step, the whole batch waiting
(`benchmarks/ct2_batching.py`: 8 prompts of 120-400 tokens take twice as long as one mixed
batch as one at a time). So a batch holds requests that share their static prefix (passed as
`static_prompt`, whose state CTranslate2 caches across calls, as the in-process engine's
prefix cache does) and whose remaining lengths lie within `length_tolerance` tokens; each
request keeps its own `max_new_tokens` (the callback ends its row). Batches decode in
parallel, one thread each (`parallel`, by default torch's thread count): on 2 cores that
beats one batch on both cores, since the batches are small and decode is memory-bound.

Logprobs follow `LocalChatModel`'s convention: per completion token, log softmax(logits / T)
(T = 1 when greedy), computed from the step's logits over the whole vocabulary, since
CTranslate2's own `log_prob` is always taken at T = 1. They come from int8 weights, so they
differ from the trainer's fp32 ones: `exact = False` tells the trainer to correct for the
mismatch (`training.grpo.update`, truncated importance sampling). Unlike the in-process
engine, a batch samples from one process-wide random generator (`ctranslate2.set_random_seed`,
seeded by the batch's first request), so a sampled call's tokens depend on what it was
batched and decoded beside; greedy calls do not.
"""

from __future__ import annotations

import copy
import queue
import shutil
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.decoding import GenerationOutput, GenerationRequest, eos_ids, hit_stop

_Item = tuple[GenerationRequest, Future]  # a request and the future its caller waits on


class CT2Sampler:
    """Requests decoded by CTranslate2 (int8 by default) from the policy's current weights."""

    exact = False  # int8 logprobs are not the trainer's

    def __init__(self, model: Any, tokenizer: Any, *, quantization: str = "int8",
                 threads: int | None = None, parallel: int | None = None,
                 window_s: float = 0.005, max_batch: int = 16, length_tolerance: int = 16):
        try:
            import ctranslate2  # noqa: F401
        except ImportError:
            raise ImportError("the ct2 engine needs CTranslate2: pip install 'sleuth[ct2]' "
                              "(ctranslate2>=4.5)") from None
        self.model, self.tokenizer = model, tokenizer
        # CTranslate2's own default takes every core for one batch, and torch (the embedder,
        # the trainer) computes in the same process: on 2 cores, 8 concurrent research runs
        # took 129 s with its default and 76 s with one thread. Default: one thread per batch
        # and as many batches decoding at once as torch has threads (`parallel`).
        self.quantization = quantization
        self.threads = threads if threads is not None else 1
        self.parallel = parallel if parallel is not None else max(1, torch.get_num_threads())
        self.window_s, self.max_batch = window_s, max_batch
        self.length_tolerance = length_tolerance
        self.eos = eos_ids(tokenizer, model)
        self.sync_s: list[float] = []  # seconds of each conversion and reload
        self.batch_sizes: list[int] = []
        self._folder = Path(tempfile.mkdtemp(prefix="sleuth-ct2-"))
        weakref.finalize(self, shutil.rmtree, self._folder, True)  # also when never closed
        self._generator: Any = None
        self._stale = True
        self._sync_error: BaseException | None = None
        self._queue: queue.Queue[tuple[GenerationRequest, Future] | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="sleuth-ct2-batch")
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sleuth-ct2")
        self._thread.start()

    def submit(self, req: GenerationRequest) -> Future:
        """Queue a request; the future resolves when `req.result` is set."""
        fut: Future = Future()
        self._queue.put((req, fut))
        return fut

    def weights_changed(self) -> None:
        """The policy's weights changed: convert them again before the next batch."""
        self._stale = True

    def close(self) -> None:
        """Stop the worker after the queued requests and delete the converted model."""
        self._queue.put(None)

    # ------------------------------------------------------------------ weights

    def _sync(self) -> None:
        """Convert the current weights (LoRA merged into a copy) in memory, and reload."""
        import ctranslate2

        t0 = time.perf_counter()
        ct = self._folder / "ct2"
        model = self.model
        # a PEFT model merges into a copy; any other is copied (the conversion consumes it)
        model = (copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload")
                 else copy.deepcopy(model))
        self._generator = None
        convert_in_memory(model, self.tokenizer, ct, self.quantization)
        self._generator = ctranslate2.Generator(str(ct), device="cpu", intra_threads=self.threads,
                                                inter_threads=self.parallel,
                                                compute_type=self.quantization)
        self._stale = False
        self.sync_s.append(time.perf_counter() - t0)

    # ------------------------------------------------------------------ the loop

    def _gather(self, block: bool) -> list[_Item] | None:
        """The requests queued now (None once `close` was called). With `block`, wait for a
        first one, then take those arriving within the window too."""
        items: list[_Item] = []
        if block:
            first = self._queue.get()
            if first is None:
                return None
            items.append(first)
        deadline = time.monotonic() + (self.window_s if block else 0.0)
        while True:
            try:  # a timeout of 0 takes only what is queued already
                nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return items
            if nxt is None:
                self._queue.put(None)  # seen again by the next gather, once these are planned
                return items
            items.append(nxt)

    def _loop(self) -> None:
        """Whenever a decoding thread is free, batch what is waiting then (`_next_batch`).
        Requests that arrive while every thread decodes wait together, so under load the
        batches grow, as a continuous batcher's do; planning each batch only when a thread
        can take it keeps it from being fixed at its first request's arrival."""
        slots = threading.BoundedSemaphore(self.parallel)
        running: set[Future] = set()
        pending: list[_Item] = []
        closing = False
        while pending or not closing:
            slots.acquire()  # a thread is free
            if not closing:
                got = self._gather(block=not pending)
                closing = got is None
                pending.extend(got or [])
            if not pending:
                slots.release()
                continue
            if self._stale:  # convert once no batch decodes from the old model
                wait(list(running))
                try:
                    self._sync()
                    self._sync_error = None
                except BaseException as e:  # noqa: BLE001 - the callers get the error
                    # not retried per batch (a try costs a conversion, ~30 s for SmolLM2):
                    # every request fails with it until the weights change again
                    self._sync_error, self._stale = e, False
            if self._sync_error is not None:
                for _, fut in pending:
                    fut.set_exception(self._sync_error)
                pending = []
                slots.release()
                continue
            batch, pending = self._next_batch(pending)
            # CTranslate2 releases the GIL while it decodes: batches run in parallel, up to
            # `parallel` at once (the generator's inter_threads)
            job = self._pool.submit(self._run, [r for r, _ in batch], [f for _, f in batch])
            running.add(job)
            job.add_done_callback(lambda j: (running.discard(j), slots.release()))
        wait(list(running))
        self._pool.shutdown()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _next_batch(self, pending: list[_Item]) -> tuple[list[_Item], list[_Item]]:
        """The batch (`plan_batches`, at most `max_batch` requests) holding the oldest waiting
        request, and the requests left waiting."""
        oldest = pending[0][0]
        band = next(b for b in plan_batches([r for r, _ in pending], self.length_tolerance)
                    if any(r is oldest for r in b))
        ids = {id(r) for r in band}
        batch = [p for p in pending if id(p[0]) in ids][:self.max_batch]  # in arrival order
        chosen = {id(r) for r, _ in batch}
        return batch, [p for p in pending if id(p[0]) not in chosen]

    def _run(self, batch: list[GenerationRequest], futures: list[Future]) -> None:
        """Decode one batch and resolve its requests' futures (with the error, if any)."""
        try:
            self._decode(batch)
            for fut in futures:
                fut.set_result(None)
        except BaseException as e:  # noqa: BLE001 - the callers get the error
            for fut in futures:
                if not fut.done():
                    fut.set_exception(e)

    def _decode(self, reqs: list[GenerationRequest]) -> None:
        """One `generate_batch` over requests of one prefix and sampling parameters."""
        import ctranslate2

        r0 = reqs[0]
        greedy = r0.temperature <= 0
        temperature = 1.0 if greedy else r0.temperature
        prefix = _prefix(r0)
        tokens: list[list[int]] = [[] for _ in reqs]
        stopped = [False] * len(reqs)

        def step(s: Any) -> bool:  # True ends that row: end of turn, stop string or its length
            i = s.batch_id
            tokens[i].append(int(s.token_id))
            if s.token_id in self.eos:
                return True
            stopped[i] = bool(reqs[i].stop) and hit_stop(self.tokenizer, tokens[i], reqs[i].stop)
            return stopped[i] or len(tokens[i]) >= reqs[i].max_new_tokens

        ctranslate2.set_random_seed(r0.seed % (1 << 31))  # process-wide: see the docstring
        self.batch_sizes.append(len(reqs))
        ids_of = self.tokenizer.convert_ids_to_tokens
        results = self._generator.generate_batch(
            [ids_of(r.prompt_ids[len(prefix):]) for r in reqs],
            static_prompt=ids_of(list(prefix)) if prefix else None,
            max_length=max(r.max_new_tokens for r in reqs), min_length=r0.min_new_tokens,
            sampling_topk=1 if greedy else 0, sampling_topp=r0.top_p,
            sampling_temperature=temperature, end_token=sorted(self.eos), return_end_token=True,
            include_prompt_in_result=False, return_logits_vocab=True, callback=step)
        for i, (r, res) in enumerate(zip(reqs, results, strict=True)):
            ids = [int(t) for t in res.sequences_ids[0]]
            ended = bool(ids) and ids[-1] in self.eos
            r.result = GenerationOutput(
                token_ids=ids, logprobs=_logprobs(res.logits[0], ids, temperature),
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason="stop" if ended or stopped[i] else "length")


def convert_in_memory(model: Any, tokenizer: Any, output_dir: Path, quantization: str) -> None:
    """Write a CTranslate2 model converted from an in-memory transformers model (consumed)."""
    import ctranslate2.converters.transformers as ct2_transformers

    # `TransformersConverter` reads the config from a folder and loads the model with
    # `from_pretrained`: hand it ours instead (saving 540 MB of fp32 weights and loading them
    # back cost seconds, and that load is where transformers' tie_weights race bit).
    class _Converter(ct2_transformers.TransformersConverter):
        def load_model(self, model_class: Any, path: str, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, tokenizer_class: Any, path: str, **kwargs: Any) -> Any:
            return tokenizer

    config_dir = output_dir.parent / "config"
    model.config.save_pretrained(config_dir)
    # Its loaders call `gc.collect()` after each layer, to free a big model's memory as they
    # go: in a process holding torch, transformers and LangGraph a full collection is slow
    # (profiled with another job on the cores: 12 of a SmolLM2 conversion's 18 s). The copy's
    # tensors are freed by reference counting anyway, so its collections are skipped here.
    with _CONVERTING:  # two engines syncing at once must not keep each other's stand-in
        gc_module = ct2_transformers.gc
        ct2_transformers.gc = _NoCollect  # type: ignore[assignment]
        try:
            _Converter(str(config_dir)).convert(str(output_dir), quantization=quantization,
                                                force=True)
        finally:
            ct2_transformers.gc = gc_module


_CONVERTING = threading.Lock()


class _NoCollect:
    """Stands in for the `gc` module inside CTranslate2's converter (see `convert_in_memory`)."""

    @staticmethod
    def collect(generation: int = 2) -> int:
        """Collect nothing."""
        return 0


def _prefix(req: GenerationRequest) -> tuple[int, ...]:
    """The request's static prefix, when a suffix remains after it (else none)."""
    return tuple(req.prompt_ids[:req.prefix_len]) if 0 < req.prefix_len < len(req.prompt_ids) else ()


def plan_batches(reqs: list[GenerationRequest], length_tolerance: int = 16,
                 ) -> list[list[GenerationRequest]]:
    """Requests split into `generate_batch` calls: one prefix and one set of sampling
    parameters per call, and remaining prompt lengths within `length_tolerance` tokens of
    the call's shortest (see the module docstring for why)."""
    groups: dict[tuple, list[GenerationRequest]] = {}
    for r in reqs:
        key = (_prefix(r), max(r.temperature, 0.0), r.top_p, r.min_new_tokens)
        groups.setdefault(key, []).append(r)
    batches: list[list[GenerationRequest]] = []
    for group in groups.values():
        current: list[GenerationRequest] = []
        for r in sorted(group, key=lambda r: len(r.prompt_ids)):
            if current and len(r.prompt_ids) - len(current[0].prompt_ids) > length_tolerance:
                batches.append(current)
                current = []
            current.append(r)
        batches.append(current)
    return batches


def _logprobs(logits: list[Any], ids: list[int], temperature: float) -> list[float]:
    """log softmax(logits / T) of each generated token. A row whose prompt is longer than
    the batch's shortest gets logits for its last prompt positions too: the last len(ids)
    entries are the generated tokens' (checked against CTranslate2's own T = 1 scores)."""
    out = []
    for step, tok in zip(logits[len(logits) - len(ids):], ids, strict=True):
        x = np.asarray(step, dtype=np.float64).reshape(-1) / temperature
        top = x.max()
        out.append(float(x[tok] - top - np.log(np.exp(x - top).sum())))
    return out
