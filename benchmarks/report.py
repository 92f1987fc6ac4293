"""Render the README's results tables from benchmarks/results/*.json.

Every results table in README.md sits between two markers and is written by this script,
never by hand:

    <!-- report:NAME -->
    (the rendered table NAME)
    <!-- /report:NAME -->

`python benchmarks/report.py` rewrites every such region (nothing outside the markers
changes). `--check` exits 1, printing a unified diff, when README.md is not what it would
write, and also when a results file holds an absolute machine path (it prints which);
otherwise 0. `--print NAME` prints one table. A table whose results file is missing, or still
in an older schema, renders as a one-line italic note naming the script that writes it.
Output is deterministic: fixed float formats, fixed or sorted row order.

Usage: python benchmarks/report.py [--check | --print NAME] [--readme PATH] [--results DIR]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
REGION = re.compile(r"<!-- report:([\w-]+) -->(.*?)<!-- /report:\1 -->", re.S)
OPENING = re.compile(r"<!-- report:([\w-]+) -->")
MACHINE_PATH = re.compile(r'"(hf:)?/(root|home|tmp|work)/')

SUITES = ("world", "hotpotqa")
RUN_NAMES = {"graph": "(a) full graph", "retrieval-title": "(b) retrieval only: top passage's title",
             "retrieval-sentence": "(b) retrieval only: its best sentence",
             "oracle": "(c) oracle selector (gold passages)"}
STAGE_NAMES = {"chains": "+ `chains`: SFT on rationale chains",
               "rft": "+ `rft`: rejection-sampling SFT", "grpo": "+ `grpo`: GRPO on a curriculum"}

Json = dict[str, Any]
Renderer = Callable[[Path], str]
TABLES: dict[str, Renderer] = {}


class Note(Exception):
    """A table that cannot be rendered yet; its message is the note shown in its place."""


def table(name: str) -> Callable[[Renderer], Renderer]:
    """Register a render function (results folder -> Markdown) as the table `name`."""
    def register(fn: Renderer) -> Renderer:
        TABLES[name] = fn
        return fn
    return register


def per_file(files: Mapping[str, str], key: str, script: str, draw: Callable[[Json], str],
             doc: str) -> None:
    """Register one table per results file in `files` (name -> what it holds), each drawn
    by `draw` from the file `script` wrote; `doc` names it, with `{}` for what it holds."""
    for name, what in files.items():
        def render(results: Path, name: str = name) -> str:
            return draw(load(results, name, key, script=script))
        render.__doc__ = doc.format(what)
        table(name)(render)


def load(results: Path, name: str, key: str, script: str | None = None) -> Json:
    """`results/<name>.json`; a Note if it is missing or lacks `key` (an older schema).
    `script`: the benchmark that writes it, when its name is not `name`."""
    path, script = results / f"{name}.json", f"benchmarks/{script or name}.py"
    if not path.exists():
        raise Note(f"*No results yet: `python {script}` writes `benchmarks/results/{name}.json`.*")
    data = json.loads(path.read_text())
    if key not in data:
        raise Note(f"*Not yet regenerated: run `python {script}` "
                   f"(`benchmarks/results/{name}.json` is in an older schema).*")
    return data


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def goal(text: str, met: bool) -> str:
    """`(goal X: met)` or `(goal X: missed)`."""
    return f"(goal {text}: {'met' if met else 'missed'})"


def signed(x: float) -> str:
    """A signed number with one decimal."""
    return f"{x:+.1f}"


def interval(ci: Sequence[float] | None) -> str:
    """A 95% interval as `[lo, hi]` (signed), or a dash."""
    return f"[{signed(ci[0])}, {signed(ci[1])}]" if ci else "–"


def ordered(keys: Iterable[str], known: Sequence[str]) -> list[str]:
    """The known keys in their given order, then the others sorted."""
    keys = list(keys)
    return [k for k in known if k in keys] + sorted(k for k in keys if k not in known)


# --- baselines.json -------------------------------------------------------------------------

def baseline_runs(data: Json) -> Iterable[tuple[str, str, Json]]:
    """(suite, run, summary) of every run present, suites and runs in a fixed order."""
    for suite in ordered(data["suites"], SUITES):
        runs = data["suites"][suite]
        for run in ordered(runs, list(RUN_NAMES)):
            yield suite, run, runs[run]["summary"]


@table("baselines")
def baselines(results: Path) -> str:
    """Every baseline run overall: accuracy, evidence, search behaviour, format."""
    rows = []
    for suite, run, s in baseline_runs(load(results, "baselines", "suites")):
        a, model = s["all"], s["all"]["model_calls"] > 0
        rows.append([suite, RUN_NAMES.get(run, run), str(a["n"]), f"{a['em']:.1f}", f"{a['f1']:.1f}",
                     f"{a['evidence_recall']:.2f}", f"{a['searches']:.1f}",
                     f"{a['searches_after_miss']:.1f}" if model else "–",
                     f"{a['format_rate']:.2f}" if model else "–"])
    return markdown(["suite", "run", "n", "EM %", "F1 %", "evidence recall", "searches",
                     "after a miss", "format"], rows)


@table("baselines_by_type")
def baselines_by_type(results: Path) -> str:
    """EM and F1 of every baseline run by question type."""
    rows = [[suite, RUN_NAMES.get(run, run), kind, str(b["n"]), f"{b['em']:.1f}", f"{b['f1']:.1f}"]
            for suite, run, s in baseline_runs(load(results, "baselines", "suites"))
            for kind, b in sorted(s.items()) if kind != "all"]
    return markdown(["suite", "run", "type", "n", "EM %", "F1 %"], rows)


# --- learning.json --------------------------------------------------------------------------

def type_em(summary: Json, kind: str) -> str:
    """EM % of one question type, or a dash where the suite has none."""
    return f"{summary[kind]['em']:.1f}" if kind in summary else "–"


def policy_row(name: str, minutes: str, evaluation: Json) -> list[str]:
    """One policy's row of the learning table."""
    w, h = evaluation["world"]["summary"], evaluation["hotpotqa"]["summary"]
    a = w["all"]
    return [name, minutes, f"{a['em']:.1f}", f"{a['f1']:.1f}", type_em(w, "bridge"),
            type_em(w, "comparison"), f"{h['all']['em']:.1f}", f"{h['all']['f1']:.1f}",
            f"{a['format_rate']:.2f}", f"{a['searches']:.2f} / {a['searches_after_miss']:.2f}"]


def rate(x: float | None) -> str:
    """A rate with two decimals, or a dash where there is none."""
    return "–" if x is None else f"{x:.2f}"


@table("confirm")
def confirm(results: Path) -> str:
    """Each policy on the fresh sets no choice was made on (confirm.py)."""
    data = load(results, "confirm", "comparisons")
    rows = []
    for name, p in data["policies"].items():
        spec = f" (`{data['specs'][name]}`)" if name in data["specs"] else " (no model)"
        h = p["hotpotqa"]
        if "world" in p:
            w = p["world"]["summary"]
            world = [f"{w['all']['em']:.1f}", type_em(w, "bridge"), type_em(w, "comparison"),
                     f"{w['all']['searches']:.2f} / {w['all']['searches_after_miss']:.2f}",
                     rate(p["world"]["retry_rate"])]
        else:
            world = ["–"] * 5
        rows.append([name + spec, *world, f"{h['summary']['all']['em']:.1f}",
                     rate(h["retry_rate"]) if "world" in p else "–"])
    return markdown(["policy", "world EM %", "bridge EM %", "comparison EM %",
                     "searches / after a miss (world)", "retry rate after a miss (world)",
                     "HotpotQA EM %", "retry rate after a miss (HotpotQA)"], rows)


@table("confirm_comparisons")
def confirm_comparisons(results: Path) -> str:
    """The paired comparisons on the fresh sets (confirm.py; `a+b`: each task's EM averaged)."""
    data = load(results, "confirm", "comparisons")
    return markdown(["comparison", "EM gain (points)", "95% CI", "gained", "lost", "n"],
                    [comparison_row(f"{SUITE_NAMES_FRESH[c['suite']]}: {c['after']} vs "
                                    f"{c['before']}", c) for c in data["comparisons"]])


def stage_order(data: Json) -> list[str]:
    """The training stages in the order they ran."""
    return list(data["summary"].get("stages") or data["stages"])


@table("learning")
def learning(results: Path) -> str:
    """The untrained policy and the policy after each training stage, on the held-out sets."""
    return stages_table(load(results, "learning", "comparisons"))


# earlier learning runs kept beside learning.json, each as the same table
KEPT_RUNS = {
    "learning_answer_first": "the earlier recipe's run (answer-first writer demonstrations)",
    "learning_reasoned": "the reasoned-writer run (facts first, roles balanced)",
    "learning_top10": "the top-10-layer run (default prompts, 561 chains steps)",
    "learning_rboth": "the run with both reasoned prompts (planner and writer) and the int8 engine",
    "learning_rplanner": "a run shipped earlier (GRPO with the old search_cost)",
    "learning_rplanner_all": "the first chains-only run with the adapter on every layer",
    "learning_rwasted": "an earlier shipped run (top-10-layer adapter, GRPO with the "
                        "wasted-search charge)",
    "learning_rall_bal": "the run shipped before the MuSiQue-chains run (all-layer GRPO at 5e-5)",
    "learning_rall_grpo": "the all-layer run whose GRPO stage stopped searching",
    "learning_rall_grounded": "the same GRPO stage under the grounded reward mix",
    "learning_rall_bal_lr1e4": "the all-layer recipe's GRPO stage at learning rate 1e-4",
    "learning_rall_g8": "the all-layer recipe's GRPO stage with groups of 8 rollouts",
    "learning_rall_glayers10": "the all-layer recipe's GRPO stage training the top 10 layers only",
    "learning_rall_glayers10_lr15": "the top-10-layer GRPO stage at learning rate 1.5e-4",
    "learning_rreal_chains": "the chains stage with real-page demonstrations (MuSiQue, 2Wiki)",
    "learning_rreal_lr15": "the top-10-layer GRPO stage at 1.5e-4 from the real-page warm start",
    "learning_rmusique_lr15": "the same GRPO stage from a warm start with MuSiQue's chains only",
}


@table("planner_decisions")
def planner_decisions(results: Path) -> str:
    """Each policy's stop-or-search-on decisions on the teacher's planner calls."""
    data = load(results, "planner_decisions", "policies")
    return markdown(
        ["policy", "planner calls", "searches on where the teacher does %",
         "stops where the teacher does %", "unparsed %"],
        [[f"{name} (`{row['spec']}`)", str(row["planner_calls"]), f"{row['continue_recall']:.1f}",
          f"{row['stop_recall']:.1f}", f"{row['unparsed_rate']:.1f}"]
         for name, row in data["policies"].items()])


@table("rl_sampled")
def rl_sampled(results: Path) -> str:
    """Rollout EM of GRPO stages against their warm start on training seeds (group_spread.py)."""
    data = load(results, "rl_sampled", "comparisons", script="group_spread")
    base = data["policies"][0]
    rows = [[f"`{base['policy'].rsplit('/', 1)[-1]}` (warm start)",
             f"{base['temperatures'][0]['em']:.2f}", "–"]]
    for m, c in zip(data["policies"][1:], data["comparisons"], strict=True):
        rows.append([f"`{m['policy'].rsplit('/', 1)[-1]}`", f"{m['temperatures'][0]['em']:.2f}",
                     f"{signed(c['gain'])} {interval(c['ci95'])}"])
    return markdown(["policy", "rollout EM", "against the warm start (points, 95% interval)"], rows)


# seeds.py results (one recipe, several seeds), each as the same table
SEED_RUNS = {
    "lr15_seeds": "the top-10-layer GRPO stage at 1.5e-4 from the generated-only warm start",
    "rreal_seeds": "the same GRPO stage from the real-page warm start",
    "rmusique_seeds": "the same GRPO stage from the MuSiQue-chains warm start (shipped)",
}


def seed_runs(data: Json) -> str:
    """Each seed's RL-stage gain and HotpotQA, and their mean (a seeds.py results file)."""
    rows = []
    for r in data["runs"]:
        c = r["rl_stage"]
        rows.append([f"{r['seed']} (`{r['file']}`)", str(r["steps"]), f"{r['world_em']:.1f}",
                     f"{signed(c['gain'])} {interval(c['ci95'])}", f"{c['gained']} / {c['lost']}",
                     f"{r['hotpotqa_em']:.1f}",
                     f"{r['hotpotqa_vs_warm']['gained']} / {r['hotpotqa_vs_warm']['lost']}"])
    s = data["summary"]
    mean = s["rl_stage_em_gain_mean"]
    rows.append([f"**mean of {s['runs']}**", "", "", f"**{signed(mean)}** "
                 f"{interval(s['rl_stage_em_gain_mean_ci95'])} {goal('≥ +5', mean >= 5)}",
                 "", f"{s['hotpotqa_em_mean']:.1f}", ""])
    return markdown(["seed (results file)", "GRPO steps", "world EM %",
                     "RL stage: world EM gain over the warm start (points, 95% CI)",
                     "world tasks gained / lost", "HotpotQA EM %", "HotpotQA gained / lost"], rows)


@table("rmusique_seeds_against")
def rmusique_seeds_against(results: Path) -> str:
    """Each run's final policy, and the runs' mean, against another run's (seeds.py --against)."""
    data = load(results, "rmusique_seeds", "against", script="seeds")
    o, other = data["against"], f"`{data['against']['file']}`"
    named = [("the runs' mean", o["pooled"]),
             *((f"seed {r['seed']}", c) for r, c in zip(data["runs"], o["runs"], strict=True))]
    return markdown(["comparison", "EM gain (points)", "95% CI", "gained", "lost", "n"],
                    [comparison_row(f"{suite}: {who} vs {other}", c[suite])
                     for suite in ("world", "hotpotqa") for who, c in named])


def stages_table(data: Json) -> str:
    """A learning run's table: untrained, then after each stage."""
    rows = [policy_row("untrained", "–", data["before"])]
    for stage in stage_order(data):
        ev = data["stages"][stage]
        rows.append(policy_row(STAGE_NAMES.get(stage, f"+ `{stage}`"),
                               f"{float(ev['record']['minutes']):.1f}", ev))
    return markdown(["policy", "training minutes", "world EM %", "world F1 %", "bridge EM %",
                     "comparison EM %", "HotpotQA EM %", "HotpotQA F1 %", "format",
                     "searches / after a miss (world)"], rows)


per_file(KEPT_RUNS, "comparisons", "learning", stages_table, "The same table for {}.")
per_file(SEED_RUNS, "summary", "seeds", seed_runs,
         "One GRPO recipe repeated with other seeds: {} (seeds.py).")


def comparison_row(name: str, c: Json) -> list[str]:
    """One paired comparison: gain, interval, tasks gained and lost."""
    return [name, signed(c["gain"]), interval(c["ci95"]), str(c["gained"]), str(c["lost"]), str(c["n"])]


def versus_rows(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                ) -> tuple[str, str, str]:
    """Tasks gained, lost and paired (EM) between two per-task row lists; dashes if unpaired."""
    a, b = ({r["task_id"]: float(r["em"] or 0) for r in rs} for rs in (before, after))
    if not a or a.keys() != b.keys():
        return "–", "–", "–"
    return (str(sum(b[i] > a[i] for i in a)), str(sum(b[i] < a[i] for i in a)), str(len(a)))


@table("learning_comparisons")
def learning_comparisons(results: Path) -> str:
    """Paired EM gains of the final policy (bootstrap 95% intervals) and the title baseline."""
    data = load(results, "learning", "comparisons")
    comps, stages = data["comparisons"], stage_order(data)
    rows = [comparison_row("held-out world: final vs untrained", comps["world_after_vs_before"]),
            comparison_row("HotpotQA: final vs untrained", comps["hotpotqa_after_vs_before"])]
    if comps.get("rl_stage_vs_warm_start"):
        rows.append(comparison_row(f"held-out world: after `{stages[-1]}` vs after `{stages[-2]}`",
                                   comps["rl_stage_vs_warm_start"]))
    title, final = data["hotpotqa_retrieval_title"], data["stages"][stages[-1]]["hotpotqa"]
    em = title["summary"]["all"]["em"]
    rows.append([f"HotpotQA: final vs the retrieval-only title baseline (EM {em:.1f} %)",
                 signed(final["summary"]["all"]["em"] - em), "–",
                 *versus_rows(title["per_task"], final["per_task"])])
    return markdown(["comparison", "EM gain (points)", "95% CI", "gained", "lost", "n"], rows)


@table("learning_examples")
def learning_examples(results: Path) -> str:
    """The final policy with and without the worked examples in its prompts."""
    p = load(results, "learning", "comparisons")["prompt_examples"]
    d = p["with_minus_without"]
    rows = [["without worked examples", f"{p['em_without']:.1f}", f"{p['tokens_per_call_without']:.0f}"],
            ["with worked examples", f"{p['em_with']:.1f}", f"{p['tokens_per_call_with']:.0f}"],
            ["with − without", f"{signed(d['gain'])} {interval(d['ci95'])}; "
                               f"{d['gained']} gained, {d['lost']} lost",
             f"{p['tokens_per_call_with'] - p['tokens_per_call_without']:+.0f}"]]
    return markdown([f"final policy, first {p['n']} held-out world tasks", "EM %", "tokens per call"],
                    rows)


# --- rollouts.json, train_step.json ---------------------------------------------------------

@table("rollouts")
def rollouts(results: Path) -> str:
    """Concurrent against sequential research runs, orchestration share, batch-1 decode."""
    r = load(results, "rollouts", "engines")
    n, dec, s, e = r["runs"], r["decode"], r["summary"], r["engines"]
    rows = [[f"{n} research runs, sequential",
             f"{r['sequential_s']:.1f} s, {r['sequential_traj_per_min']:.2f} trajectories/min"],
            [f"{n} concurrent (continuous batching)",
             f"{r['concurrent_s']:.1f} s, {r['concurrent_traj_per_min']:.2f} trajectories/min"],
            ["**speedup**", f"**{s['concurrent_speedup']:.2f}×** "
                            f"{goal('3×', s['concurrent_speedup'] >= 3)}"],
            ["answers identical to the sequential runs", f"{r['identical_answers']} of {n}"],
            ["rows decoding together at each admission, mean / max",
             f"{r['mean_batch_size']:.1f} / {r['max_batch_size']}"],
            ["orchestration per run (instant replay, median)",
             f"{1000 * r['orchestration_s_per_run']:.1f} ms of {r['wall_s_per_run']:.1f} s: "
             f"**{s['orchestration_share']:.2%}** of wall time "
             f"{goal('≤ 2%', s['orchestration_share'] <= 0.02)}; "
             f"{r['replays_matching']} of {n} replays reproduced their answers"],
            ["batch-1 decode", f"**{dec['ours_tok_s']:.1f} tok/s** "
                               f"(transformers' `generate`: {dec['hf_generate_tok_s']:.1f} tok/s)"],
            ["memory-bandwidth limit",
             f"{dec['bandwidth_limit_tok_s']:.1f} tok/s ({dec['weight_mb']:.0f} MB of weights per "
             f"token, {dec['copy_bandwidth_gb_s']:.1f} GB/s copy bandwidth): decode runs at "
             f"{dec['share_of_limit']:.0%} of it"],
            [f"{n} concurrent, CTranslate2 int8 engine",
             f"{e['int8_concurrent_s']:.1f} s, {e['int8_traj_per_min']:.2f} trajectories/min "
             f"(+ {e['conversion_s']:.1f} s converting the weights, once per update)"],
            ["**engine speedup** (int8 / fp32, both concurrent)",
             f"**{s['engine_speedup']:.2f}×** {goal('≥ 3×', s['engine_speedup'] >= 3)}"],
            engine_em_row(e)]
    return markdown(["", "measured"], rows)


def engine_em_row(e: Json) -> list[str]:
    """The int8 engine's greedy EM against fp32's on held-out tasks (when it was measured)."""
    if e.get("em_delta") is None:
        return ["greedy EM, int8 against fp32", "not measured in this run (`--em-tasks 0`)"]
    return [f"greedy EM, first {e['em_tasks']} held-out world tasks",
            f"int8 {e['em_int8']:.1f} vs fp32 {e['em_fp32']:.1f}: **{signed(e['em_delta'])}** "
            f"points {interval(e['em_delta_ci95'])} "
            f"{goal('within ±3', abs(e['em_delta']) <= 3)}; {e['em_gained']} gained, "
            f"{e['em_lost']} lost"]


@table("train_step")
def train_step(results: Path) -> str:
    """One GRPO step, ours against TRL's GRPOTrainer: median seconds and peak memory."""
    r = load(results, "train_step", "prefix_update")
    med, s = r["median"], r["summary"]
    time_, memory = s["time_ratio_vs_trl"], s["memory_ratio_vs_trl"]
    rows = [["ours (`training.grpo`: batched sampling + `update`, prefixes shared)",
             f"{med['ours']['seconds']:.1f}", f"{med['ours']['peak_rss_mb']:,.0f} MB"],
            ["TRL `GRPOTrainer`", f"{med['trl']['seconds']:.1f}", f"{med['trl']['peak_rss_mb']:,.0f} MB"],
            ["**ratio**", f"**{time_:.2f}×** {goal('≤ 0.6×', time_ <= 0.6)}",
             f"**{memory:.2f}×** {goal('≤ 1.2×', memory <= 1.2)}"]]
    runs = len(r["runs"]["ours"])
    return markdown([f"median of {runs}, {r['prefix_tokens']}-token shared system turn",
                     "seconds per step", "peak RSS"], rows)


@table("prefix_update")
def prefix_update(results: Path) -> str:
    """The GRPO update on research batches, each prompt prefix computed once or every time."""
    r = load(results, "train_step", "prefix_update")
    rows = []
    for key, label in (("without_examples", "without worked examples (as trained)"),
                       ("with_examples", "with worked examples")):
        b = r["prefix_update"][key]
        goal_ = goal("≥ 2×", b["speedup"] >= 2) if key == "without_examples" else ""
        rows.append([label, f"{b['calls']}", f"{b['prompt_tokens']:,} / {b['completion_tokens']:,}",
                     f"{b['prompt_tokens_not_recomputed']:,}", f"{b['median_whole_s']:.1f} s",
                     f"{b['median_shared_s']:.1f} s", f"**{b['speedup']:.2f}×** {goal_}".strip()])
    return markdown(["prompts", "calls", "prompt / completion tokens", "prompt tokens shared",
                     f"update, whole (median of {r['repeats']})", "update, shared", "speedup"], rows)


@table("lora_layers")
def lora_layers(results: Path) -> str:
    """The GRPO update with LoRA on every decoder layer against the top N only."""
    r = load(results, "train_step", "lora_layers")["lora_layers"]
    med, n = r["median_s"], len(r["seconds"]["all"])
    rows = [[f"every layer ({r['layers']})", f"{med['all']:.1f} s", "–"]]
    rows += [[f"top {name[3:]} layers", f"{med[name]:.1f} s", f"**{r['speedup'][name]:.2f}×**"]
             for name in med if name != "all"]
    return markdown([f"rank-8 LoRA on {r['calls']} calls ({r['prompt_tokens']:,} prompt / "
                     f"{r['completion_tokens']:,} completion tokens)",
                     f"update (median of {n})", "speedup"], rows)


@table("grpo_step")
def grpo_step(results: Path) -> str:
    """Whole GRPO steps, today's settings against both throughput levers."""
    g = load(results, "train_step", "grpo_step")["grpo_step"]
    prefixes = {True: "shared", False: "whole"}
    per_call = "per_sample_speedup" in g  # results written before it was measured lack it
    rows = [[label, f"{g[side]['rollout_engine']}, prefixes {prefixes[g[side]['share_prefix']]}",
             f"{g[side]['median_step_s']:.1f} s", f"{g[side]['median_rollout_s']:.1f} s",
             f"{g[side]['median_update_s']:.1f} s",
             *([f"{g[side]['median_samples']:g}", f"{g[side]['median_s_per_sample']:.2f} s"]
               if per_call else [])]
            for side, label in (("today", "today's"), ("levers", "both levers"))]
    rows.append(["**speedup**", "", f"**{g['speedup']:.2f}×** {goal('≥ 2×', g['speedup'] >= 2)}",
                 "", "", *(["", f"{g['per_sample_speedup']:.2f}×"] if per_call else [])])
    steps = len(g["today"]["step_s"])
    return markdown(["GRPO step (2 tasks × 4 rollouts)", "sampling engine, update",
                     f"step (median of {steps})", "sampling + scoring", "update",
                     *(["calls trained on (median)", "step seconds per call (median)"]
                       if per_call else [])], rows)


@table("ct2_sync")
def ct2_sync(results: Path) -> str:
    """The int8 engine's weight sync: through the disk against in memory."""
    d = load(results, "ct2_sync", "summary")
    s = d["summary"]
    return markdown(
        [f"convert SmolLM2 + rank-16 LoRA to int8 (median of {d['repeats']})", "seconds"],
        [["merged copy saved, loaded back and converted (the engine's first version)",
          f"{s['through_disk_s']:.2f} s"],
         ["merged copy converted in memory (`agents.ct2.convert_in_memory`)", f"{s['in_memory_s']:.2f} s"],
         ["**speedup**", f"**{s['speedup']:.1f}×**; identical model files: "
                         f"{'yes' if s['identical_files'] else 'NO'}"]])


# --- cml.json, debate.json ------------------------------------------------------------------

SUITE_NAMES = {"world": "held-out world", "hotpotqa": "HotpotQA"}
SUITE_NAMES_FRESH = {"world": "fresh world", "hotpotqa": "HotpotQA 101-200"}  # confirm.py's sets


def paired_row(label: str, before: float, after: float, c: Json, goal_text: str,
               target: float) -> list[str]:
    """Both sides' means, the paired gain against its goal, its interval, gained/lost/n."""
    return [label, f"{before:.1f}", f"{after:.1f}",
            f"**{signed(c['gain'])}** {goal(goal_text, c['gain'] >= target)}",
            interval(c["ci95"]), str(c["gained"]), str(c["lost"]), str(c["n"])]


@table("cml")
def cml(results: Path) -> str:
    """The CML selector against the lexical one: evidence F1 and EM on the held-out sets."""
    r = load(results, "cml", "comparisons")
    s, comps, rows = r["summary"], r["comparisons"], []
    for suite in ordered({k.split("_")[0] for k in comps}, SUITES):
        for metric, label, target in (("evidence_f1", "evidence F1", 15), ("em", "EM", 3)):
            rows.append(paired_row(f"{SUITE_NAMES.get(suite, suite)}: {label}",
                                   s[f"{suite}_{metric}_lexical"], s[f"{suite}_{metric}_cml"],
                                   comps[f"{suite}_{metric}"], f"≥ +{target}", target))
    return markdown(["metric (%)", "lexical selector", "CML selector", "gain (points)", "95% CI",
                     "tasks gained", "lost", "n"], rows)


@table("debate")
def debate(results: Path) -> str:
    """The debate writer against the single writer on conflict and plain tasks."""
    r = load(results, "debate", "comparisons")
    s, c = r["summary"], r["comparisons"]
    conflict, plain = c["conflict_accuracy"], c["plain_em"]
    rows = [paired_row("conflict tasks: accuracy (every valid answer, no wrong one)",
                       s["conflict_accuracy_single"], s["conflict_accuracy_debate"], conflict,
                       "≥ +10", 10),
            paired_row("plain tasks: EM", s["plain_em_single"], s["plain_em_debate"], plain,
                       "≥ −2", -2),
            ["model calls per conflict task", f"{s['model_calls_single']:.1f}",
             f"{s['model_calls_debate']:.1f}", "", "", "", "", ""]]
    return markdown([f"`{s['model']}`, {s['debate_rounds']} rounds (%)", "single writer",
                     "debate", "change (points)", "95% CI", "tasks gained", "lost", "n"], rows)


# --- retrieval.json -------------------------------------------------------------------------

def best_bold(values: Mapping[str, float], modes: Sequence[str]) -> list[str]:
    """The recalls of `modes` to three decimals, the best ones bold."""
    top = max(values[m] for m in modes)
    return [f"**{values[m]:.3f}**" if values[m] == top else f"{values[m]:.3f}" for m in modes]


@table("retrieval_quality")
def retrieval_quality(results: Path) -> str:
    """Gold-document recall@5 by search mode, on two corpora."""
    r = load(results, "retrieval", "recall_union")
    modes = ("vector", "fts", "hybrid")
    rows = [[f"union of those questions' paragraphs ({r['recall_union']['chunks']:,} chunks)",
             *best_bold(r["recall_union"], modes)]]
    if "recall_10k" in r:
        rows.append([f"all paragraphs of ../shared/data, topped up with world pages "
                     f"({r['latency_10k']['chunks']:,} chunks)", *best_bold(r["recall_10k"], modes)])
    return markdown(["corpus searched", "vector", "FTS", "hybrid"], rows)


@table("retrieval_ingest")
def retrieval_ingest(results: Path) -> str:
    """`KnowledgeBase.ingest` against the raw embedder on the same chunks."""
    i = load(results, "retrieval", "ingest")["ingest"]
    rows = [[str(i["documents"]), f"{i['chunks']:,}", str(i["repeats"]), f"{i['raw_embed_s']:.1f} s",
             f"{i['ingest_s']:.1f} s",
             f"**{i['ingest_overhead']:.3f}×** {goal('≤ 1.10', i['ingest_overhead'] <= 1.10)}",
             f"{i['raw_chunks_per_s']:.1f} / {i['ingest_chunks_per_s']:.1f}"]]
    return markdown(["documents", "chunks", "median of", "raw embedder", "`ingest`", "ingest / raw",
                     "chunks/s raw / ingest"], rows)


def vector_index(block: Json) -> str:
    """The vector index a latency block names (its other indices are full-text)."""
    if "vector_index" in block:
        return str(block["vector_index"])
    return ", ".join(sorted(set(block.get("indices", [])) - {"FTS"})) or "none (exact)"


@table("retrieval_latency")
def retrieval_latency(results: Path) -> str:
    """Search latency p50 / p95 by mode at each corpus size."""
    r = load(results, "retrieval", "latency_10k")
    rows = [[f"{b['chunks']:,}", str(b["vectors"]), vector_index(b),
             *(f"{b[m]['p50_ms']:.1f} / {b[m]['p95_ms']:.1f} ms" for m in ("vector", "fts", "hybrid"))]
            for b in (r[k] for k in ("latency_10k", "latency_100k") if k in r)]
    return markdown(["chunks", "vectors", "index", "vector p50 / p95", "FTS p50 / p95",
                     "hybrid p50 / p95"], rows)


# --- the README -----------------------------------------------------------------------------

def render(name: str, results: Path = RESULTS) -> str:
    """Table `name` as Markdown, or its italic note where its results are not there yet."""
    try:
        return TABLES[name](results)
    except Note as note:
        return str(note)


def rewrite(text: str, results: Path = RESULTS) -> str:
    """The README text with every marked region holding its freshly rendered table; a
    ValueError for a marker naming no table or left unclosed."""
    names = OPENING.findall(text)
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise ValueError(f"README marks unknown tables: {', '.join(unknown)} (known: {', '.join(TABLES)})")
    if len(names) != len(REGION.findall(text)):
        raise ValueError("README has a `<!-- report:NAME -->` marker without its `<!-- /report:NAME -->`")
    return REGION.sub(lambda m: f"<!-- report:{m[1]} -->\n\n{render(m[1], results)}\n\n"
                                f"<!-- /report:{m[1]} -->", text)


def machine_paths(results: Path = RESULTS) -> list[str]:
    """`file:line: text` of every absolute machine path in the results files."""
    return [f"{path.name}:{n}: {line.strip()[:120]}"
            for path in sorted(results.glob("*.json"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if MACHINE_PATH.search(line)]


def check(readme: Path, results: Path) -> int:
    """1 (printing why) if README.md is stale or a results file holds a machine path, else 0."""
    text = readme.read_text()
    diff = list(difflib.unified_diff(text.splitlines(keepends=True),
                                     rewrite(text, results).splitlines(keepends=True),
                                     f"{readme.name} (as it is)", f"{readme.name} (as rendered)"))
    sys.stdout.writelines(diff)
    if diff:
        print(f"\n{readme.name} is stale: run `python benchmarks/report.py`")
    paths = machine_paths(results)
    for hit in paths:
        print(f"absolute machine path in {hit}")
    return 1 if diff or paths else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the README's regions, check them, or print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="Exit 1 with a diff if README.md is stale.")
    mode.add_argument("--print", metavar="NAME", choices=sorted(TABLES), help="Print one table.")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"report.py: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """What `main` was asked to do, once its arguments are parsed."""
    if args.print:
        print(render(args.print, args.results))
        return 0
    if args.check:
        return check(args.readme, args.results)
    text = args.readme.read_text()
    new = rewrite(text, args.results)
    if new != text:
        args.readme.write_text(new)
    state = "rewritten" if new != text else "unchanged"
    print(f"{args.readme.name}: {len(OPENING.findall(new))} tables, {state}")
    for hit in machine_paths(args.results):
        print(f"warning: absolute machine path in {hit}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
