"""Bad command-line input ends a `sleuth` command with one clear line and a non-zero exit.

Every case runs in process (typer's CliRunner through the `sleuth_in_process` fixture, which
lets any exception the command does not turn into a message fail the test) and asserts one
line on stderr, nothing on stdout, no traceback. Where the mistake can be seen before a model
loads, the model loader is replaced by one that fails the test: the check must come first.
"""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def one_line(proc, *words: str) -> str:
    """The command failed with exactly one line on stderr holding `words`; that line."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not proc.stdout.strip(), proc.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model, or running an evaluation, fails the test."""
    import graph.builder
    import training.evaluate
    from agents.models import LocalChatModel

    def loud(*args, **kwargs):
        raise AssertionError("a model loaded (or the work started) before the input was checked")
    monkeypatch.setattr(graph.builder, "load_chat_model", loud)
    monkeypatch.setattr(training.evaluate, "evaluate", loud)
    monkeypatch.setattr(LocalChatModel, "from_pretrained", loud)


@pytest.fixture
def paths(tmp_path):
    """A file, an empty folder, and a Bamboogle-like task file (no documents)."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "kb").mkdir()
    tasks = tmp_path / "bamboogle.jsonl"
    tasks.write_text(json.dumps({"id": "b1", "question": "Who?", "answer": "x"}) + "\n")
    return tmp_path


def test_kb_naming_a_file(sleuth_in_process, no_model, paths):
    file = str(paths / "file")
    for args in (["search", "x", "--kb", file], ["ingest", file, "--kb", file],
                 ["ask", "Who?", "--kb", file]):
        one_line(sleuth_in_process(*args, check=False), "--kb", "is a file")


def test_kb_naming_a_file_subprocess(sleuth, paths):
    """As a user runs it: no rich traceback box (the case that used to load the model first)."""
    one_line(sleuth("ask", "Who?", "--kb", str(paths / "file"), check=False), "is a file")


def test_record_to_a_bad_place(sleuth_in_process, no_model, paths):
    for bad, says in ((paths / "file", "is a file"), (paths / "file" / "runs", "not a folder")):
        one_line(sleuth_in_process("ask", "Who?", "--kb", str(paths / "kb"), "--record", str(bad),
                                   check=False), "--record", says)


def test_model_folder_that_does_not_exist(sleuth_in_process, no_model, paths, monkeypatch):
    """The spec is checked before transformers sees it (no OSError from the hub client)."""
    import graph.builder
    from agents import load_chat_model

    monkeypatch.setattr(graph.builder, "load_chat_model", load_chat_model)  # the real resolver
    one_line(sleuth_in_process("ask", "Who?", "--kb", str(paths / "kb"), "--model",
                               "hf:/missing/model", check=False), "hf:/missing/model", "no model folder")


def test_out_of_range_option_names_the_flag(sleuth_in_process, no_model, paths):
    line = one_line(sleuth_in_process("ask", "Who?", "--kb", str(paths / "kb"), "--max-rounds", "0",
                                      check=False), "--max-rounds", "greater than or equal to 1")
    assert "validation error" not in line and "pydantic" not in line
    one_line(sleuth_in_process("eval", str(paths / "bamboogle.jsonl"), "--out", str(paths / "r.json"),
                               "--temperature", "-1", check=False), "--temperature", "0")


def test_install_hint_keeps_its_brackets(sleuth_in_process, paths, monkeypatch):
    """Rich markup would eat `[openai]`: the printed line is escaped."""
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # not installed, whatever the venv
    one_line(sleuth_in_process("ask", "Who?", "--kb", str(paths / "kb"), "--model", "openai:gpt-4o",
                               check=False), "pip install 'sleuth[openai]'")


def test_eval_out_is_checked_before_the_evaluation(sleuth_in_process, no_model, paths):
    tasks = str(paths / "bamboogle.jsonl")
    for bad, says in ((paths / "file" / "r.json", "not a folder"), (paths / "kb", "is a folder")):
        one_line(sleuth_in_process("eval", tasks, "--out", str(bad), check=False), "--out", says)
    assert not (paths / "r.json").exists()


def test_tasks_without_documents_name_the_flags(sleuth_in_process, paths):
    line = one_line(sleuth_in_process("eval", str(paths / "bamboogle.jsonl"), "--out",
                                      str(paths / "r.json"), check=False),
                    "Bamboogle", "--backend web --search-url URL", "--kb DIR")
    assert "search_url=" not in line and "backend=" not in line and "kb=" not in line


def test_python_callers_keep_their_argument_names(paths):
    """The same mistakes from Python: typed errors naming the Python arguments, raised before
    any model loads (the model spec below would fail if it were loaded)."""
    from graph import research, research_many
    from tools.corpora import open_corpus

    with pytest.raises(ValueError, match="is a file.*knowledge=DIR"):
        research("Who?", knowledge=paths / "file", model="hf:/never/loaded")
    with pytest.raises(ValueError, match="is a file"):
        research_many(["Who?"], knowledge=paths / "file", model="hf:/never/loaded")
    with pytest.raises(FileNotFoundError, match="hf:/missing"):
        research("Who?", knowledge=paths / "kb", model="hf:/missing")
    with pytest.raises(ValueError, match="search_url="):
        with open_corpus([{"id": "b1", "question": "Who?"}], backend="web"):
            pass


def test_error_line_formats(tmp_path):
    """The one formatter: OSErrors without `[Errno N]`, validation errors by flag."""
    from pydantic import ValidationError

    from graph.config import ResearchConfig
    from graph.console import error_line
    from tools.errors import URLRefused

    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError) as os_error:
        (tmp_path / "f" / "g").mkdir()
    assert error_line(os_error.value) == f"{tmp_path / 'f' / 'g'}: Not a directory"
    with pytest.raises(ValidationError) as invalid:
        ResearchConfig(max_rounds=0, k=0)
    assert error_line(invalid.value, {"--max-rounds"}) == (
        "--max-rounds: input should be greater than or equal to 1, not 0; "
        "k: input should be greater than or equal to 1, not 0")
    assert error_line(URLRefused("refused: 10.0.0.1 is private")) == "refused: 10.0.0.1 is private"
