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


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test where it is absent (a user's machine)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (set SLEUTH_SHARED_DATA)")
    return path


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


@pytest.fixture(scope="session")
def hotpot_tasks() -> list[dict]:
    """The first 100 HotpotQA development questions."""
    from tools.documents import read_tasks

    return read_tasks(shared_file("hotpotqa_dev.jsonl"), 100)


@pytest.fixture(scope="session")
def hotpot_kb(hotpot_tasks, tmp_path_factory):
    """A real LanceDB knowledge base of the union of those questions' paragraphs."""
    from tools.knowledge import KnowledgeBase

    docs = {d["doc_id"]: d for t in hotpot_tasks for d in t["docs"]}
    kb = KnowledgeBase(tmp_path_factory.mktemp("hotpot_kb"))
    kb.ingest(list(docs.values()), progress=False)
    return kb


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
def make_tiny_policy(smollm2):
    """A factory of randomly initialised 2-layer Llamas with the SmolLM2 tokenizer: fast, not
    smart. `make_tiny_policy(seed=0, initializer_range=0.02)`; a larger `initializer_range`
    peaks the logits (the toy-world tests use 0.3)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents import LocalChatModel

    tok = smollm2.tokenizer

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
def world_kb(small_world, tmp_path_factory):
    """The small world ingested into a real knowledge base (real MiniLM embeddings)."""
    from tools.knowledge import KnowledgeBase

    kb = KnowledgeBase(tmp_path_factory.mktemp("world_kb"))
    kb.ingest(small_world.docs, progress=False)
    return kb
