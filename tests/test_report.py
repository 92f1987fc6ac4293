"""benchmarks/report.py: the README's results tables are rendered from the results files."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "report.py"
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"

spec = importlib.util.spec_from_file_location("report", SCRIPT)
assert spec and spec.loader
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """report.py as a subprocess."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60)


def portable_results(tmp_path: Path) -> Path:
    """A copy of the committed results files with machine paths replaced (the tables never
    show them), so the README check is tested apart from the path check."""
    out = tmp_path / "results"
    out.mkdir()
    for path in RESULTS.glob("*.json"):
        text = re.sub(r'"(hf:)?/(root|home|tmp|work)/', r'"\1$HOME/', path.read_text())
        (out / path.name).write_text(text)
    return out


def block(n: int, em: float, f1: float, calls: float = 5.0) -> dict:
    """One summary block as benchmarks/protocol.summary writes it."""
    return {"n": n, "em": em, "f1": f1, "right": round(n * em / 100), "evidence_recall": 0.5,
            "format_rate": 0.875, "searches": 2.3, "searches_after_miss": 0.5,
            "model_calls": calls, "tokens": 2000.0}


def summary(em: float, calls: float = 5.0) -> dict:
    """A suite summary: overall, bridge and comparison."""
    return {"all": block(4, em, em + 10, calls), "bridge": block(2, em / 2, em, calls),
            "comparison": block(2, 1.5 * em, em + 20, calls)}


def task_rows(ems: list[int]) -> list[dict]:
    """Per-task rows with these exact-match results."""
    return [{"task_id": f"t{i}", "type": "bridge", "em": em} for i, em in enumerate(ems)]


def evaluation(em: float, ems: list[int]) -> dict:
    """A policy's evaluation on both suites."""
    return {"world": {"summary": summary(em), "per_task": task_rows(ems)},
            "hotpotqa": {"summary": summary(em + 1), "per_task": task_rows(ems)}}


def comparison(gain: float) -> dict:
    """A paired comparison as benchmarks/protocol.paired writes it."""
    return {"gain": gain, "ci95": [gain - 5, gain + 5], "gained": 3, "lost": 1, "n": 4}


@pytest.fixture
def new_results(tmp_path: Path) -> Path:
    """Results files in the current schemas of baselines.py and learning.py."""
    out = tmp_path / "new"
    out.mkdir()
    runs = {"oracle": {"summary": summary(24.0), "per_task": []},
            "graph": {"summary": summary(1.0), "per_task": []},
            "retrieval-title": {"summary": summary(9.0, calls=0.0), "per_task": []}}
    (out / "baselines.json").write_text(json.dumps(
        {"model": "local:smollm2", "config": {}, "suites": {"hotpotqa": runs, "world": runs},
         "summary": {}}))
    stages = {"chains": {"record": {"minutes": 24.96}, **evaluation(30.0, [1, 1, 0, 0])},
              "grpo": {"record": {"minutes": 35.0}, **evaluation(42.5, [1, 1, 1, 0])}}
    (out / "learning.json").write_text(json.dumps({
        "summary": {"stages": ["chains", "grpo"], "checkpoint": None},
        "comparisons": {"world_after_vs_before": comparison(31.2),
                        "hotpotqa_after_vs_before": comparison(2.0),
                        "rl_stage_vs_warm_start": comparison(12.5)},
        "before": evaluation(11.0, [0, 1, 0, 0]),
        "hotpotqa_retrieval_title": {"summary": summary(9.0, calls=0.0),
                                     "per_task": task_rows([0, 0, 1, 1])},
        "stages": stages,
        "prompt_examples": {"n": 100, "em_without": 40.0, "em_with": 35.0,
                            "with_minus_without": comparison(-5.0),
                            "tokens_per_call_without": 610.4, "tokens_per_call_with": 1402.6}}))
    return out


@pytest.mark.parametrize("name", sorted(report.TABLES))
def test_every_table_renders_from_the_committed_results(name: str) -> None:
    out = report.render(name)
    assert out.startswith("| ") or re.fullmatch(r"\*(No results yet|Not yet regenerated): .*\*", out), out
    assert "\n" not in out or all(line.startswith("|") and line.endswith("|") for line in out.splitlines())


def test_committed_tables_hold_the_committed_figures() -> None:
    assert "| 100,000 | random (HashEmbedder) | IvfHnswSq | 8.0 / 9.5 ms | 7.7 / 8.8 ms | 20.1 / 25.5 ms |" \
        in report.render("retrieval_latency")
    assert "**0.44×** (goal ≤ 0.6×: met)" in report.render("train_step")
    assert "**1.51×** (goal ≥ 2×: missed)" in report.render("prefix_update")
    assert "**1.73×** (goal 3×: missed)" in report.render("rollouts")
    assert "**2.05×** (goal ≥ 2×: met)" in report.render("grpo_step")


def test_the_committed_readme_is_what_report_writes(tmp_path: Path) -> None:
    done = run("--check", "--results", str(portable_results(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(report.OPENING.findall(README.read_text())) == len(report.TABLES)


def test_a_changed_cell_fails_the_check_with_a_diff(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("| 4.4 / 6.1 ms |", "| 4.3 / 6.1 ms |", 1))
    assert readme.read_text() != README.read_text()
    results = portable_results(tmp_path)
    done = run("--check", "--readme", str(readme), "--results", str(results))
    assert done.returncode == 1
    assert "-| 10,000 | MiniLM (real) | none (exact) | 27.3 / 38.0 ms | 4.3 / 6.1 ms" in done.stdout
    assert "+| 10,000 | MiniLM (real) | none (exact) | 27.3 / 38.0 ms | 4.4 / 6.1 ms" in done.stdout
    assert run("--readme", str(readme), "--results", str(results)).returncode == 0
    assert readme.read_text() == README.read_text()


def test_only_the_marked_regions_are_rewritten(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro 1.23\n<!-- report:train_step -->\nstale\n<!-- /report:train_step -->\n"
                      "outro 4.56\n")
    assert run("--readme", str(readme), "--results", str(RESULTS)).returncode == 0
    text = readme.read_text()
    assert text.startswith("intro 1.23\n<!-- report:train_step -->\n\n| median of")
    assert text.endswith("|\n\n<!-- /report:train_step -->\noutro 4.56\n")
    assert "stale" not in text


def test_an_unknown_or_unclosed_marker_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    for text in ("<!-- report:nope -->\n<!-- /report:nope -->\n", "<!-- report:train_step -->\n"):
        readme.write_text(text)
        done = run("--check", "--readme", str(readme), "--results", str(RESULTS))
        assert done.returncode == 2 and "README" in done.stderr, done.stderr


def test_an_absolute_path_in_a_results_file_fails_the_check(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no tables\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "clean.json").write_text('{"checkpoint": "hf:$SLEUTH_HOME/runs/x"}\n')
    assert run("--check", "--readme", str(readme), "--results", str(results)).returncode == 0
    (results / "dirty.json").write_text('{\n "checkpoint": "/root/x"\n}\n')
    done = run("--check", "--readme", str(readme), "--results", str(results))
    assert done.returncode == 1
    assert 'dirty.json:2: "checkpoint": "/root/x"' in done.stdout
    assert report.machine_paths(results) == ['dirty.json:2: "checkpoint": "/root/x"']


def test_committed_results_hold_no_machine_paths_once_regenerated() -> None:
    learning = json.loads((RESULTS / "learning.json").read_text())
    awaiting = {"learning.json"} if "comparisons" not in learning else set()  # old schema
    hits = [h for h in report.machine_paths() if h.split(":")[0] not in awaiting]
    assert hits == []


def test_a_missing_results_file_renders_a_note(tmp_path: Path) -> None:
    for name in report.TABLES:
        note = report.render(name, tmp_path)
        assert note.startswith("*No results yet: `python benchmarks/") and note.endswith(".json`.*")
        assert "\n" not in note
    assert report.render("train_step", tmp_path) == \
        "*No results yet: `python benchmarks/train_step.py` writes `benchmarks/results/train_step.json`.*"


def test_an_old_schema_renders_the_not_yet_regenerated_note(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "rollouts.json", tmp_path / "learning.json")
    assert report.render("learning", tmp_path).startswith(
        "*Not yet regenerated: run `python benchmarks/learning.py`")


def test_baselines_in_the_current_schema(new_results: Path) -> None:
    lines = report.render("baselines", new_results).splitlines()
    assert lines[0] == ("| suite | run | n | EM % | F1 % | evidence recall | searches | after a miss "
                        "| format |")
    assert lines[2:] == [
        "| world | (a) full graph | 4 | 1.0 | 11.0 | 0.50 | 2.3 | 0.5 | 0.88 |",
        "| world | (b) retrieval only: top passage's title | 4 | 9.0 | 19.0 | 0.50 | 2.3 | – | – |",
        "| world | (c) oracle selector (gold passages) | 4 | 24.0 | 34.0 | 0.50 | 2.3 | 0.5 | 0.88 |",
        "| hotpotqa | (a) full graph | 4 | 1.0 | 11.0 | 0.50 | 2.3 | 0.5 | 0.88 |",
        "| hotpotqa | (b) retrieval only: top passage's title | 4 | 9.0 | 19.0 | 0.50 | 2.3 | – | – |",
        "| hotpotqa | (c) oracle selector (gold passages) | 4 | 24.0 | 34.0 | 0.50 | 2.3 | 0.5 | 0.88 |"]
    by_type = report.render("baselines_by_type", new_results).splitlines()
    assert by_type[0] == "| suite | run | type | n | EM % | F1 % |"
    assert by_type[2:4] == ["| world | (a) full graph | bridge | 2 | 0.5 | 1.0 |",
                            "| world | (a) full graph | comparison | 2 | 1.5 | 21.0 |"]
    assert len(by_type) == 2 + 2 * 3 * 2


def test_learning_in_the_current_schema(new_results: Path) -> None:
    table = report.render("learning", new_results).splitlines()
    assert table[2:] == [
        "| untrained | – | 11.0 | 21.0 | 5.5 | 16.5 | 12.0 | 22.0 | 0.88 | 2.30 / 0.50 |",
        "| + `chains`: SFT on rationale chains | 25.0 | 30.0 | 40.0 | 15.0 | 45.0 | 31.0 | 41.0 | 0.88 "
        "| 2.30 / 0.50 |",
        "| + `grpo`: GRPO on a curriculum | 35.0 | 42.5 | 52.5 | 21.2 | 63.8 | 43.5 | 53.5 | 0.88 "
        "| 2.30 / 0.50 |"]
    comps = report.render("learning_comparisons", new_results).splitlines()
    assert comps[2:] == [
        "| held-out world: final vs untrained | +31.2 | [+26.2, +36.2] | 3 | 1 | 4 |",
        "| HotpotQA: final vs untrained | +2.0 | [-3.0, +7.0] | 3 | 1 | 4 |",
        "| held-out world: after `grpo` vs after `chains` | +12.5 | [+7.5, +17.5] | 3 | 1 | 4 |",
        "| HotpotQA: final vs the retrieval-only title baseline (EM 9.0 %) | +34.5 | – | 2 | 1 | 4 |"]
    examples = report.render("learning_examples", new_results).splitlines()
    assert examples[0] == "| final policy, first 100 held-out world tasks | EM % | tokens per call |"
    assert examples[2:] == ["| without worked examples | 40.0 | 610 |",
                            "| with worked examples | 35.0 | 1403 |",
                            "| with − without | -5.0 [-10.0, +0.0]; 3 gained, 1 lost | +792 |"]


def test_absent_runs_are_skipped(new_results: Path) -> None:
    data = json.loads((new_results / "baselines.json").read_text())
    del data["suites"]["hotpotqa"]
    (new_results / "baselines.json").write_text(json.dumps(data))
    assert "hotpotqa" not in report.render("baselines", new_results)
    assert report.render("baselines", new_results).count("\n") == 1 + 3


def test_cml_and_debate_tables(tmp_path: Path) -> None:
    comps = {f"{s}_{m}": comparison(g) for s, m, g in (("world", "evidence_f1", 18.0),
                                                       ("world", "em", 2.0),
                                                       ("hotpotqa", "evidence_f1", 9.0),
                                                       ("hotpotqa", "em", 3.0))}
    summary_ = {f"{s}_{m}_{w}": v for s in ("world", "hotpotqa") for m in ("evidence_f1", "em")
                for w, v in (("lexical", 40.0), ("cml", 50.0))}
    (tmp_path / "cml.json").write_text(json.dumps({"summary": summary_, "comparisons": comps}))
    lines = report.render("cml", tmp_path).splitlines()
    assert lines[2:] == [
        "| held-out world: evidence F1 | 40.0 | 50.0 | **+18.0** (goal ≥ +15: met) "
        "| [+13.0, +23.0] | 3 | 1 | 4 |",
        "| held-out world: EM | 40.0 | 50.0 | **+2.0** (goal ≥ +3: missed) | [-3.0, +7.0] | 3 | 1 | 4 |",
        "| HotpotQA: evidence F1 | 40.0 | 50.0 | **+9.0** (goal ≥ +15: missed) "
        "| [+4.0, +14.0] | 3 | 1 | 4 |",
        "| HotpotQA: EM | 40.0 | 50.0 | **+3.0** (goal ≥ +3: met) | [-2.0, +8.0] | 3 | 1 | 4 |"]
    (tmp_path / "debate.json").write_text(json.dumps({
        "summary": {"model": "local:smollm2", "debate_rounds": 2, "conflict_accuracy_single": 4.0,
                    "conflict_accuracy_debate": 1.0, "plain_em_single": 6.0, "plain_em_debate": 2.0,
                    "model_calls_single": 5.2, "model_calls_debate": 14.8},
        "comparisons": {"conflict_accuracy": comparison(-3.0), "plain_em": comparison(-4.0)}}))
    lines = report.render("debate", tmp_path).splitlines()
    assert lines[0].startswith("| `local:smollm2`, 2 rounds (%) | single writer | debate |")
    assert lines[2].startswith("| conflict tasks: accuracy (every valid answer, no wrong one) | 4.0 "
                               "| 1.0 | **-3.0** (goal ≥ +10: missed) | [-8.0, +2.0] |")
    assert lines[3].startswith("| plain tasks: EM | 6.0 | 2.0 | **-4.0** (goal ≥ −2: missed) |")
    assert lines[4] == "| model calls per conflict task | 5.2 | 14.8 |  |  |  |  |  |"


def test_grpo_step_table(tmp_path: Path) -> None:
    side = {"step_s": [60.0, 62.0, 70.0], "median_step_s": 62.0, "median_rollout_s": 30.0,
            "median_update_s": 32.0}
    (tmp_path / "train_step.json").write_text(json.dumps({"grpo_step": {
        "today": {**side, "rollout_engine": "transformers", "share_prefix": False},
        "levers": {**side, "median_step_s": 31.0, "rollout_engine": "ct2-int8", "share_prefix": True},
        "speedup": 2.0}}))
    lines = report.render("grpo_step", tmp_path).splitlines()
    assert lines[0].endswith("| step (median of 3) | sampling + scoring | update |")
    assert lines[2:] == ["| today's | transformers, prefixes whole | 62.0 s | 30.0 s | 32.0 s |",
                         "| both levers | ct2-int8, prefixes shared | 31.0 s | 30.0 s | 32.0 s |",
                         "| **speedup** |  | **2.00×** (goal ≥ 2×: met) |  |  |"]
