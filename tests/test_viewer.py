"""`sleuth view`: the page is checked in a real browser (headless Chromium from the system's
packages: `.ci/run` installs it), after its script ran: rows, filters from the URL, a
timeline, tokens coloured by logprob, a group side by side, web text shown as text, and a
screenshot. Without Chromium those tests skip and say how to install it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import lxml.html
import pytest
from scripted import ScriptedChatModel, default_reply, field

from graph import ResearchConfig, TrajectoryStore, research_many
from graph.trajectory import ModelStep, ToolStep, Trajectory
from graph.viewer import Viewer, detail, token_pieces
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from training import rewards

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned=1\">"
BREAKOUT = "</script><script>document.title='pwned2'</script>"
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome",
            "google-chrome-stable")


@pytest.fixture(scope="module")
def view_store(small_world, smollm2_tokenizer, tmp_path_factory):
    """A store of 2 tasks x 2 samples (scripted model, scored with the default reward), plus a
    copy whose model calls carry real SmolLM2 token ids and logprobs, and one whose question,
    answer and search hit hold HTML and a script."""
    tmp = tmp_path_factory.mktemp("view")
    kb = KnowledgeBase(tmp / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    store = TrajectoryStore(tmp / "runs", reward=rewards.default())
    tasks = small_world.tasks[:2]

    def script(role, messages):  # the first task answered right, the second as default (wrong)
        if role == "writer" and field(messages, "Question") == tasks[0]["question"]:
            return f"<answer>{tasks[0]['answer']}</answer>"
        return default_reply(role, messages)

    research_many(tasks, samples_per_task=2, store=store, model=ScriptedChatModel(script=script),
                  knowledge=kb, config=ResearchConfig(search_mode="fts", seed=3))
    first = list(store)[0]
    store.append(_with_tokens(first, smollm2_tokenizer))
    store.append(_hostile(first))
    return store


def _with_tokens(t: Trajectory, tok) -> Trajectory:
    """A copy whose model calls carry the tokenizer's ids (ending in <|im_end|>) and logprobs."""
    steps = []
    for s in t.steps:
        if isinstance(s, ModelStep):
            ids = tok.encode(s.text + " — Zürich 東京", add_special_tokens=False) + [tok.eos_token_id]
            s = s.model_copy(update={"completion_token_ids": ids,
                                     "text": tok.decode(ids, skip_special_tokens=True),
                                     "logprobs": [-0.7 * (i % 6) for i in range(len(ids))]})
        steps.append(s)
    return t.model_copy(update={"id": "with-tokens", "group_id": "tokens", "steps": steps})


def _hostile(t: Trajectory) -> Trajectory:
    steps = [s.model_copy(update={"output": [{**s.output[0], "title": BREAKOUT + HOSTILE}]})
             if isinstance(s, ToolStep) and s.output else s for s in t.steps]
    return t.model_copy(update={"id": "hostile", "group_id": "hostile", "question": BREAKOUT,
                                "answer": HOSTILE, "steps": steps})


# --------------------------------------------------------------------------- no browser


def test_token_pieces_join_to_the_text_multibyte_characters_included(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "Varo — Zürich, 東京 🙂 ok"
    ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == text
    assert "" in pieces[:-1]  # a character split over byte tokens: its last token carries it
    assert pieces[-1] == ""  # the end-of-turn token decodes to nothing


def test_detail_colours_tokens_or_says_why_it_shows_plain_text(view_store, smollm2_tokenizer):
    with_tokens = view_store.get("with-tokens")
    coloured = [s for s in detail(with_tokens, smollm2_tokenizer)["steps"] if s["kind"] == "model"]
    assert all(s["tokens"] and s["plain_why"] is None for s in coloured)
    last = coloured[0]["tokens"][-1]
    assert last["s"] == 1 and last["t"] == "<|im_end|>"  # the special token, labelled
    assert "".join(t["t"] for t in coloured[0]["tokens"] if not t.get("s")) == with_tokens.steps[0].text

    api = Viewer(view_store, tokenizer="openai:gpt-4o-mini").detail("with-tokens")
    assert all(s["tokens"] is None and "API" in s["plain_why"] for s in api["steps"] if s["kind"] == "model")

    class Wrong:  # decodes every id as "x": the recorded text cannot come out
        all_special_ids: list[int] = []

        def decode(self, ids, skip_special_tokens=True):
            return "x" * len(ids)

    wrong = detail(with_tokens, Wrong())["steps"][0]
    assert wrong["tokens"] is None and "do not decode" in wrong["plain_why"]
    scripted = detail(view_store.get("hostile"))["steps"][0]
    assert scripted["tokens"] is None and scripted["plain_why"] is None  # nothing recorded to colour


def test_rows_carry_the_recorded_reward_and_em_and_the_cap_keeps_the_latest(view_store):
    stored = view_store.query()
    shown, total = Viewer(view_store, limit=2).latest()
    assert total == len(stored) == 6 and [t.id for t in shown] == ["with-tokens", "hostile"]
    rows = Viewer(view_store).data(embed_details=False)["rows"]
    for r, t in zip(rows, stored, strict=True):
        assert r["reward"] == pytest.approx(t.metrics["reward"])
        assert r["em"] == t.metrics["reward_components"]["exact_match"]


def test_the_page_embeds_data_that_cannot_end_its_script_block(view_store):
    page = Viewer(view_store).html()
    block = re.search(r'<script type="application/json" id="sleuth-data">(.*?)</script>', page, re.S)
    data = json.loads(block.group(1))  # the block ends where the data ends, not inside it
    hostile = data["details"]["hostile"]
    assert hostile["answer"] == HOSTILE and hostile["question"] == BREAKOUT
    assert "<script>document.title" not in page and "</script><script>" not in page


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str:
    for name in (os.environ.get("SLEUTH_CHROMIUM"), *BROWSERS):
        if name and (found := shutil.which(name)):
            return found
    pytest.skip("no headless Chromium on this machine: install the system package "
                "(apt-get install chromium; .ci/run does it where it can)")


def browse(url: str, tmp_path: Path, *args: str) -> str:
    """Load `url` in headless Chromium and return the DOM after the page's script ran (or
    whatever `args` ask for: `--screenshot=...`). Only loopback resolves."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
           "--disable-component-update", "--disable-extensions", "--disable-sync", "--no-proxy-server",
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dom(url: str, tmp_path: Path, *args: str):
    return lxml.html.fromstring(browse(url, tmp_path, "--dump-dom", *args))


def texts(tree, xpath: str) -> list[str]:
    return [e.text_content() for e in tree.xpath(xpath)]


def test_the_written_page_in_chromium(view_store, sleuth_in_process, tmp_path):
    page = tmp_path / "view.html"
    sleuth_in_process("view", str(view_store.path), "--out", str(page))
    url = page.as_uri()

    correct = dom(url + "#em=1&sort=-reward", tmp_path)
    rows = correct.xpath("//table[@id='runs']/tbody/tr")
    expected = [r for r in view_store.query() if r.metrics["reward_components"]["exact_match"] == 1]
    assert len(rows) == len(expected) == 3  # task 0: its two samples and the copy with tokens
    assert set(texts(correct, "//td[contains(@class,'em ')]")) == {"1"}
    rewards_shown = [float(x) for x in texts(correct, "//td[contains(@class,'reward')]")]
    assert rewards_shown == sorted(rewards_shown, reverse=True)
    assert "of 6 trajectories shown" in texts(correct, "//*[@id='summary']")[0]

    t = view_store.get("with-tokens")
    timeline = dom(url + "#t=with-tokens", tmp_path)
    roles = [li.get("data-role") for li in timeline.xpath("//li[contains(@class,'step model')]")]
    assert roles == [s.role for s in t.model_steps] and {"planner", "searcher", "writer"} <= set(roles)
    search = t.tool_steps[0]
    queries = texts(timeline, "//li[contains(@class,'step tool')]//span[@class='query']")
    assert queries[0] == search.input["query"]
    assert search.output[0]["doc_id"] in timeline.xpath("string(//ol[@class='hits'])")
    first = timeline.xpath("//li[contains(@class,'step model')]")[0]
    tokens = first.xpath(".//span[contains(@class,'tok')]")
    assert len(tokens) == len(t.model_steps[0].completion_token_ids)
    assert "background" in tokens[1].get("style") and "logprob -0.700" in tokens[1].get("title")
    assert texts(timeline, "//dd[@class='fact-answer']") == [t.answer]
    shown = {e.get("data-name"): float(e.text_content().split()[-1])
             for e in timeline.xpath("//span[@data-name]")}
    assert shown == pytest.approx({"reward": t.metrics["reward"], **t.metrics["reward_components"]},
                                  abs=1e-3)

    hostile = dom(url + "#t=hostile", tmp_path)
    assert texts(hostile, "//dd[@class='fact-answer']") == [HOSTILE]  # shown as text
    assert texts(hostile, "//dd[@class='fact-question']") == [BREAKOUT]
    assert BREAKOUT + HOSTILE in texts(hostile, "//ol[@class='hits']//span[@class='title']")
    assert hostile.xpath("//body/@data-pwned") == [] and not hostile.xpath("//img")  # not run
    assert hostile.xpath("string(//title)").startswith("sleuth view")

    group = view_store.query()[0].group_id
    side = dom(url + "#g=" + group, tmp_path)
    assert len(side.xpath("//div[@class='side']/div[@class='col']")) == 2

    shot = tmp_path / "viewer.png"
    browse(url + "#t=with-tokens", tmp_path, f"--screenshot={shot}", "--window-size=1400,1800",
           "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.fixture
def served(view_store):
    """The viewer's server on a free loopback port: its address."""
    from graph.viewer import url_of

    server = Viewer(view_store).server(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url_of(server)
    server.shutdown()
    server.server_close()


def test_the_server_sends_rows_and_a_detail_on_demand(served):
    assert served.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(served + "api/trajectory/hostile", timeout=10) as res:
        assert json.load(res)["answer"] == HOSTILE
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(served + "api/trajectory/none", timeout=10)
    with urllib.request.urlopen(served, timeout=10) as res:
        assert '"details": {}' in res.read().decode()  # rows only: details come on demand


def test_the_served_page_loads_a_detail_when_opened(served, view_store, tmp_path):
    tree = dom(served + "#t=with-tokens", tmp_path, "--virtual-time-budget=5000")
    assert len(tree.xpath("//li[contains(@class,'step')]")) == len(view_store.get("with-tokens").steps)
    assert tree.xpath("//li[contains(@class,'step model')]//span[contains(@class,'tok')]")


def test_sleuth_view_serves_on_loopback_and_fails_clearly(sleuth, view_store, tmp_path):
    proc = sleuth("view", str(tmp_path / "none"), check=False)
    assert proc.returncode == 1 and "no trajectory store" in proc.stderr and "Traceback" not in proc.stderr
    server = subprocess.Popen([sleuth.exe, "view", str(view_store.path), "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stderr.readline()).group(0)
        with urllib.request.urlopen(url, timeout=30) as res:
            assert res.status == 200 and b"sleuth-data" in res.read()
    finally:
        server.terminate()
        server.wait(timeout=10)
