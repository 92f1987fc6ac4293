"""Test set-up: offline, loopback-only sockets, shared fixtures on real components."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("SLEUTH_ALLOW_HOSTS", None)

import ipaddress  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SLEUTH_SHARED_DATA", REPO.parent / "shared" / "data"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(RuntimeError):
    """A test tried to reach something other than loopback."""


def _check(sock: socket.socket, address: object) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        ok = host == "localhost"
    else:
        ok = ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None
                                and ip.ipv4_mapped.is_loopback)
    if not ok:
        raise NetworkBlocked(f"tests may only open sockets to loopback, not {address!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """Fail any test that opens a socket to anything but loopback."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def _shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test where it is absent (a user's machine)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (set SLEUTH_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_file():
    """`shared_file("hotpotqa_dev.jsonl")`: a path in ../shared/data, or the test is skipped."""
    return _shared_file


def _fresh_logprobs(model, meta: dict):
    """Logprobs of a recorded completion under one full forward pass (no cache) at the
    temperature it was sampled with: what a trainer computes from the recorded token ids."""
    import torch

    prompt, completion = meta["prompt_token_ids"], meta["completion_token_ids"]
    device = next(model.model.parameters()).device
    with torch.no_grad():
        logits = model.model(torch.tensor([prompt + completion], device=device)).logits[0].float()
    t = meta["temperature"] if meta["temperature"] > 0 else 1.0
    logp = torch.log_softmax(logits[len(prompt) - 1:-1] / t, dim=-1)
    return logp.gather(1, torch.tensor(completion, device=device).unsqueeze(1)).squeeze(1).cpu()


@pytest.fixture(scope="session")
def fresh_logprobs():
    """`fresh_logprobs(chat_model, meta) -> Tensor`: the recorded completion's logprobs
    recomputed by one forward pass, to compare with the logprobs the sampler reported."""
    return _fresh_logprobs


def _check_recorded_tokens(model, store_dir: Path):
    """The one trajectory in the store, after checking every recorded model call: its prompt
    ids are the chat template of its recorded prompt, its completion ids decode to its text,
    and its logprobs are those of a fresh forward pass (what a trainer will compute)."""
    import torch
    from langchain_core.messages import convert_to_messages

    from graph import TrajectoryStore

    (traj,) = list(TrajectoryStore(store_dir))
    assert traj.model_steps and traj.tool_steps
    for step in traj.model_steps:
        assert step.role in {"planner", "searcher", "selector", "writer"}
        assert model.encode_prompt(convert_to_messages(step.prompt_messages))[0] == step.prompt_token_ids
        ids = step.completion_token_ids
        assert ids and model.tokenizer.decode(ids, skip_special_tokens=True) == step.text
        meta = {"prompt_token_ids": step.prompt_token_ids, "completion_token_ids": ids,
                "temperature": traj.config["temperature"]}
        assert torch.allclose(_fresh_logprobs(model, meta), torch.tensor(step.logprobs), atol=1e-4)
    return traj


@pytest.fixture(scope="session")
def check_recorded_tokens():
    """`check_recorded_tokens(chat_model, store_dir) -> Trajectory`: the store's one
    trajectory, its model calls checked token by token against `chat_model`."""
    return _check_recorded_tokens


class Sleuth:
    """The `sleuth` console script, run as a user runs it (a subprocess of this venv's script)."""

    exe = str(Path(sys.executable).parent / "sleuth")

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `sleuth ARGS`; with `check`, a non-zero exit fails the test with its stderr."""
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        proc = subprocess.run([self.exe, *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"sleuth {' '.join(args)} failed:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def sleuth() -> Sleuth:
    """Run the `sleuth` command: `sleuth("world", "--json").stdout`; `sleuth.exe` is its path."""
    return Sleuth()


class InProcessSleuth:
    """The `sleuth` commands run inside this process (typer's CliRunner), with the answer
    shaped like `Sleuth`'s. A subprocess pays ~5 s to import torch and load models again: use
    this for output and error checks of a command that a subprocess test already starts."""

    def __call__(self, *args: str, check: bool = True,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `sleuth ARGS`; an exception the command does not turn into a message fails."""
        from typer.testing import CliRunner

        from graph.cli import app

        result = CliRunner(env=env).invoke(app, list(args), catch_exceptions=False)
        proc = subprocess.CompletedProcess(["sleuth", *args], result.exit_code, result.stdout,
                                           result.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"sleuth {' '.join(args)} failed:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def sleuth_in_process() -> InProcessSleuth:
    """`sleuth_in_process("search", "x", "--kb", kb)`: a `sleuth` command without a subprocess."""
    return InProcessSleuth()


def _hotpot_kb(tasks: list[dict], folder: Path):
    """A real LanceDB knowledge base (real MiniLM embeddings) of the tasks' paragraphs."""
    from tools.knowledge import KnowledgeBase

    docs = {d["doc_id"]: d for t in tasks for d in t["docs"]}
    kb = KnowledgeBase(folder)
    kb.ingest(list(docs.values()), progress=False)
    return kb


@pytest.fixture(scope="session")
def hotpot_tasks() -> list[dict]:
    """The first 100 HotpotQA development questions (slow tests: ~1,000 paragraphs)."""
    from tools.documents import read_tasks

    return read_tasks(_shared_file("hotpotqa_dev.jsonl"), 100)


@pytest.fixture(scope="session")
def hotpot_kb(hotpot_tasks, tmp_path_factory):
    """The union of those 100 questions' paragraphs, with real embeddings (~20 s to build)."""
    return _hotpot_kb(hotpot_tasks, tmp_path_factory.mktemp("hotpot_kb"))


@pytest.fixture(scope="session")
def hotpot_small(hotpot_tasks, tmp_path_factory):
    """(tasks, kb): the first 8 HotpotQA questions and a real knowledge base of their ~80
    paragraphs: real embeddings and real distractors at a tenth of `hotpot_kb`'s cost."""
    tasks = hotpot_tasks[:8]
    return tasks, _hotpot_kb(tasks, tmp_path_factory.mktemp("hotpot_small"))


@pytest.fixture(scope="session")
def small_world():
    """A generated world of 20 questions (seed 7)."""
    from tools.worlds import generate_world

    return generate_world(7, 20, hops=(2, 3, 4))


@pytest.fixture
def corpus_server(small_world):
    """The corpus server over the small world, on a free loopback port."""
    from tools.corpus_server import CorpusServer

    with CorpusServer(small_world.docs) as server:
        yield server


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct as a LocalChatModel (converted once per SLEUTH_HOME)."""
    from agents import load_chat_model

    return load_chat_model("local:smollm2")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's tokenizer (chat template included) from the converted folder, weights unread."""
    from transformers import AutoTokenizer

    from agents.models import smollm2_folder

    return AutoTokenizer.from_pretrained(str(smollm2_folder()))


@pytest.fixture(scope="session")
def make_tiny_policy(smollm2_tokenizer):
    """A factory of randomly initialised 2-layer Llamas with the SmolLM2 tokenizer: fast, not
    smart. `make_tiny_policy(seed=0, initializer_range=0.02)`; a larger `initializer_range`
    peaks the logits (the toy-world tests use 0.3)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents import LocalChatModel

    tok = smollm2_tokenizer

    def make(seed: int = 0, initializer_range: float = 0.02, **chat_kwargs) -> LocalChatModel:
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                          initializer_range=initializer_range)
        chat_kwargs.setdefault("model_name", "tiny-llama")
        return LocalChatModel(model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, **chat_kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_model(make_tiny_policy):
    """One tiny Llama (seed 0) shared by the session's tests."""
    return make_tiny_policy(max_new_tokens=16)


@pytest.fixture(scope="session")
def hashed_world_kb(small_world, tmp_path_factory):
    """The small world in a real LanceDB knowledge base with hash embeddings (no model weights);
    shared by the session's tests, which only search it."""
    from tools.embeddings import HashEmbedder
    from tools.knowledge import KnowledgeBase

    kb = KnowledgeBase(tmp_path_factory.mktemp("hashed_world_kb"), embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb


@pytest.fixture(scope="session")
def world_kb(small_world, tmp_path_factory):
    """The small world ingested into a real knowledge base (real MiniLM embeddings)."""
    from tools.knowledge import KnowledgeBase

    kb = KnowledgeBase(tmp_path_factory.mktemp("world_kb"))
    kb.ingest(small_world.docs, progress=False)
    return kb


@pytest.fixture
def musique_task() -> dict:
    """A real-looking two-hop question in MuSiQue's format: a decomposition whose second step
    names the first step's answer as #1, the supporting paragraph of each, and distractors."""
    docs = [
        {"doc_id": "m:1", "title": "Jump for Glory", "gold": True,
         "text": "Jump for Glory is a 1937 British romantic drama film directed by Raoul Walsh and "
                 "starring Douglas Fairbanks Jr. It was made at Denham Studios."},
        {"doc_id": "m:2", "title": "Raoul Walsh", "gold": True,
         "text": "Raoul Walsh was an American film director. He was married to the actress "
                 "Miriam Cooper from 1916 to 1926."},
        {"doc_id": "m:3", "title": "Denham Studios", "gold": False,
         "text": "Denham Studios was a film studio in Buckinghamshire, founded in 1935."},
        {"doc_id": "m:4", "title": "Miriam Cooper", "gold": False,
         "text": "Miriam Cooper was an American silent film actress, born in Baltimore."},
    ]
    return {"id": "2hop__1_2", "question": "Who is the spouse of the director of Jump for Glory?",
            "answer": "Miriam Cooper", "aliases": [], "type": "2hop", "source": "musique",
            "docs": docs, "meta": {"question_decomposition": [
                {"id": 1, "question": "Jump for Glory >> director", "answer": "Raoul Walsh",
                 "paragraph_support_idx": 0},
                {"id": 2, "question": "who was #1 married to", "answer": "Miriam Cooper",
                 "paragraph_support_idx": 1}]}}
