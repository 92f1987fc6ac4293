"""`sleuth view`: a trajectory store as one web page (a table, timelines, groups side by side).

The page is one Jinja2 template (`templates/viewer.html.jinja`) with its style and script
inline and the data embedded as JSON: no build step, nothing fetched from outside. `tojson`
writes `<`, `>`, `&` and `'` as JSON escapes, so no `</script>` in a trajectory ends the data
block, and the script builds every element with `textContent`, never `innerHTML`: web text in
prompts, pages and answers is shown, never run.

Written to a file (`Viewer.write`) the page embeds the table rows and every row's detail.
Served (`Viewer.server`: the standard library's `ThreadingHTTPServer`, bound to loopback only;
one local reader needs no web framework) it embeds the rows, re-read at each page load so a
store being recorded grows, and fetches a trajectory's detail when it is opened.

Tokens are coloured by logprob where each completion token's text is known: the recorded ids
are decoded with the tokenizer of the model that sampled them (only its tokenizer files are
read, never its weights, and only from this machine). Where no tokenizer loads, or the ids do
not decode to the recorded text, a step shows its plain text and the page says why.
"""

from __future__ import annotations

import functools
import json
import math
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2

from graph.store import TrajectoryStore
from graph.trajectory import ModelStep, ToolStep, Trajectory
from tools.text import normalize_answer

TEMPLATES = Path(__file__).parent / "templates"
SNIPPET = 300  # characters of a hit's text shown under its title


def _num(x: Any) -> float | None:
    """A finite float, else None (JSON has no NaN or infinity)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def exact_match(t: Trajectory) -> float | None:
    """The recorded `exact_match` reward component; else the answer checked against the gold
    answers with the reward's normalisation; None when there is no gold to check against."""
    recorded = _num((t.metrics.get("reward_components") or {}).get("exact_match"))
    if recorded is not None:
        return recorded
    if t.gold is None or not t.gold.answers:
        return None
    pred = normalize_answer(t.answer)
    return float(any(pred == normalize_answer(a) for a in t.gold.answers))


def row(t: Trajectory) -> dict[str, Any]:
    """One table row: what the filters and sorting read."""
    return {"id": t.id, "task": t.task_id or "", "group": t.group_id or "", "model": t.model,
            "question": t.question, "answer": t.answer, "gold": t.gold.answer if t.gold else "",
            "reward": _num(t.metrics.get("reward")), "em": exact_match(t),
            "steps": len(t.steps), "calls": len(t.model_steps), "searches": len(t.tool_steps),
            "created": _num(t.created_at)}


# --------------------------------------------------------------------------- token texts


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a local model spec (`local:smollm2`, `hf:FOLDER`, a folder) from this
    machine, weights unread; raises LookupError saying why there is none."""
    from agents.models import converted_smollm2, parse_spec

    try:
        parsed = parse_spec(spec if ":" in spec else f"hf:{spec}")
    except ValueError as e:
        raise LookupError(str(e)) from None
    if not parsed.is_local:
        raise LookupError(f"{spec} is served by an API: its tokenizer is not on this machine")
    # smollm2_folder() converts the GGUF on first use, loading the weights: only a folder it
    # already converted serves here
    converted = converted_smollm2() if parsed.kind == "local" else None
    if parsed.kind == "local" and converted is None:
        raise LookupError("SmolLM2 is not converted yet (the first run of local:smollm2 does it)")
    source = converted or Path(parsed.name).expanduser()
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(source) if source.is_dir() else parsed.name,
                                             local_files_only=True)
    except Exception as e:  # no tokenizer files, a hub id not cached, transformers missing
        raise LookupError(f"no tokenizer for {spec} on this machine "
                          f"({type(e).__name__}: {str(e)[:120]})") from None


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text, the pieces joining to the decoded completion: a token that ends
    inside a multi-byte character gets "" and the token that completes it the character (the
    way streaming detokenizers hold bytes back); special tokens decode to ""."""
    pieces, prefix, read = [], 0, 0
    for i in range(len(ids)):
        before = tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix:i + 1], skip_special_tokens=True)
        if len(after) > len(before) and after.startswith(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before):])
            prefix, read = read, i + 1
        else:
            pieces.append("")
    return pieces


def _tokens(step: ModelStep, tokenizer: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """([{t: text, lp: logprob, s: special?}], None), or (None, why the step shows plain text)."""
    ids, logprobs = step.completion_token_ids, step.logprobs
    if not ids:
        return None, None  # nothing was recorded to colour (an API or scripted model)
    if logprobs is None or len(logprobs) != len(ids):
        return None, "its logprobs do not match its token ids"
    if tokenizer is None or isinstance(tokenizer, str):
        return None, tokenizer or "no tokenizer was given"
    pieces = token_pieces(tokenizer, ids)
    if "".join(pieces) != step.text:
        return None, "its token ids do not decode to its recorded text with this tokenizer"
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    labels = tokenizer.convert_ids_to_tokens(ids) if special & set(ids) else [None] * len(ids)
    return [{"t": p or (labels[i] if ids[i] in special else ""), "lp": _num(lp),
             **({"s": 1} if ids[i] in special else {})}
            for i, (p, lp) in enumerate(zip(pieces, logprobs, strict=True))], None


# --------------------------------------------------------------------------- detail


def _content(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=1)


def _model_step(step: ModelStep, tokenizer: Any) -> dict[str, Any]:
    tokens, why = _tokens(step, tokenizer)
    return {"kind": "model", "role": step.role, "node": step.node, "latency": _num(step.latency_s),
            "prompt": [{"role": str(m.get("role") or m.get("type") or "?"), "content": _content(m)}
                       for m in step.prompt_messages],
            "text": step.text, "tokens": tokens, "plain_why": why,
            "n_prompt": len(step.prompt_token_ids or ()),
            "n_completion": len(step.completion_token_ids or ()),
            "parsed": step.parsed, "parse_ok": step.parse_ok, "error": step.error}


def _query(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("query", "url", "question"):
            if key in value:
                return str(value[key])
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _tool_step(step: ToolStep, gold_ids: set[str]) -> dict[str, Any]:
    hits = [{"doc_id": str(h.get("doc_id") or ""), "title": str(h.get("title") or ""),
             "url": str(h.get("url") or ""), "score": _num(h.get("score")),
             "text": str(h.get("text") or "")[:SNIPPET], "gold": h.get("doc_id") in gold_ids}
            for h in step.output]
    return {"kind": "tool", "tool": step.tool, "node": step.node, "latency": _num(step.latency_s),
            "query": _query(step.input), "hits": hits, "error": step.error}


def detail(t: Trajectory, tokenizer: Any = None) -> dict[str, Any]:
    """Everything the page shows of one trajectory. `tokenizer` decodes completion token ids;
    a string instead is the reason there is none (each step then shows its plain text)."""
    gold_ids = set(t.gold.doc_ids) if t.gold else set()
    steps = [_model_step(s, tokenizer) if isinstance(s, ModelStep) else _tool_step(s, gold_ids)
             for s in t.steps]
    components = t.metrics.get("reward_components") or {}
    metrics = {k: v for k, v in t.metrics.items() if k not in ("reward", "reward_components")}
    return {**row(t), "report": t.report, "aliases": t.gold.aliases if t.gold else [],
            "gold_docs": sorted(gold_ids), "citations": t.citations, "evidence": t.evidence,
            "components": {k: _num(v) for k, v in components.items()},
            "metrics": json.loads(json.dumps(metrics, default=str)),  # plain JSON values only
            "config": t.config, "steps": steps}


def _finite(data: Any) -> Any:
    """`data` with every non-finite float as None (JSON.parse refuses NaN and Infinity)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def _intern_prompts(details: dict[str, dict[str, Any]]) -> list[str]:
    """Replace each prompt message's content by an index into one shared list (the same system
    prompt and examples open every call: a file of many runs would hold them thousands of times)."""
    texts: list[str] = []
    index: dict[str, int] = {}
    for d in details.values():
        for step in d["steps"]:
            for m in step.get("prompt", ()):
                m["ref"] = index.setdefault(m.pop("content"), len(index))
    texts.extend(index)
    return texts


# --------------------------------------------------------------------------- the page


class Viewer:
    """What the page shows of one store: the latest `limit` trajectories as rows, each one's
    detail. `tokenizer` (a tokenizer, or a model spec whose tokenizer to load) decodes every
    run's token ids; by default each run's own model spec (`config["model"]`) names it."""

    def __init__(self, store: TrajectoryStore, *, limit: int = 500, tokenizer: Any = None):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.store, self.limit, self.tokenizer = store, limit, tokenizer
        self._tokenizers: dict[str, Any] = {}  # spec -> tokenizer, or why there is none

    def latest(self) -> tuple[list[Trajectory], int]:
        """The last `limit` trajectories written (with the index's rewards), and how many the
        store holds. The JSONL is streamed once; only the ids of the last ones are kept."""
        ids: deque[str] = deque(maxlen=self.limit)
        total = 0
        for t in self.store:
            ids.append(t.id)
            total += 1
        if total <= self.limit:
            return self.store.query(), total
        where = "id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in set(ids)) + ")"
        return self.store.query(where), total

    def _tokenizer_for(self, t: Trajectory) -> Any:
        """A tokenizer for `t`'s token ids, or the reason there is none (a string)."""
        if not any(s.completion_token_ids for s in t.model_steps):
            return None
        source = self.tokenizer if self.tokenizer is not None else t.config.get("model")
        if source is None:
            return "the run records no model spec to find its tokenizer by"
        if not isinstance(source, str):
            return source
        if source not in self._tokenizers:
            try:
                self._tokenizers[source] = load_tokenizer(source)
            except LookupError as e:  # asked once per spec, not once per run
                self._tokenizers[source] = str(e)
        return self._tokenizers[source]

    def detail(self, trajectory_id: str) -> dict[str, Any]:
        """One trajectory's detail (KeyError if the store has none with this id)."""
        t = self.store.get(trajectory_id)
        return _finite(detail(t, self._tokenizer_for(t)))

    def data(self, *, embed_details: bool) -> dict[str, Any]:
        """What the page embeds: rows, counts and (for a file) every row's detail."""
        shown, total = self.latest()
        details = ({t.id: detail(t, self._tokenizer_for(t)) for t in shown} if embed_details else {})
        texts = _intern_prompts(details)
        return _finite({"store": str(self.store.path), "total": total, "limit": self.limit,
                        "rows": [row(t) for t in shown], "details": details, "texts": texts,
                        "api": not embed_details, "unreadable": len(self.store.unreadable)})

    def html(self, *, embed_details: bool = True) -> str:
        """The page: one self-contained HTML document."""
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                 undefined=jinja2.StrictUndefined)
        # `tojson` escapes <, >, & and ' after dumping: any text is safe inside <script>
        env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "default": str}
        data = self.data(embed_details=embed_details)
        return env.get_template("viewer.html.jinja").render(data=data, store=data["store"])

    def write(self, path: str | Path) -> Path:
        """Write the page, every shown trajectory's detail embedded, to one HTML file."""
        path = Path(path)
        path.write_text(self.html(embed_details=True), encoding="utf-8")
        return path

    def server(self, port: int = 0) -> ThreadingHTTPServer:
        """An HTTP server of the page on 127.0.0.1 (`port` 0: any free one); call its
        `serve_forever`, and `shutdown` from another thread to stop it."""
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        server.viewer = self  # type: ignore[attr-defined]  (read by the handler)
        return server


def url_of(server: ThreadingHTTPServer) -> str:
    """The page's address."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    """GET / (the page, rows embedded) and GET /api/trajectory/ID (one detail, as JSON)."""

    @property
    def viewer(self) -> Viewer:
        """The viewer the server was made by."""
        return self.server.viewer  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        path = urlsplit(self.path).path
        try:
            if path in ("/", "/index.html"):
                self._send(200, "text/html", self.viewer.html(embed_details=False))
            elif path.startswith("/api/trajectory/"):
                found = self.viewer.detail(unquote(path.removeprefix("/api/trajectory/")))
                self._send(200, "application/json", json.dumps(found, ensure_ascii=False))
            else:
                self._send(404, "text/plain", "not found")
        except KeyError:
            self._send(404, "text/plain", "no such trajectory")

    def _send(self, status: int, kind: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server name)
        """Quiet: the command prints the address once; requests are not news."""


__all__ = ["Viewer", "detail", "exact_match", "load_tokenizer", "row", "token_pieces", "url_of"]
