"""Does a finished recipe's result hold on sets no choice was made on?

The training recipe's settings were chosen by reading the held-out sets of
`benchmarks/protocol.py` (a learning rate, the layers GRPO trains, the curriculum), so the
figures measured there are somewhat optimistic. This script evaluates policies, greedily and
with the same research configuration, on `protocol.fresh_suites()`: a generated world of a seed
no benchmark had evaluated (200 tasks, 2-3 hops, the held-out world's shape) and HotpotQA
development questions 101-200 (the held-out set is questions 1-100). Every comparison is
paired, task by task, with a paired-bootstrap 95% interval.

Policies: NAME=POLICY, a model spec (local:smollm2) or a training stage folder under
$SLEUTH_HOME (learning-rmusique/grpo). A stage folder from a run with a `cml` stage is refused:
`benchmarks/cml.py` trains on HotpotQA questions 101-300. `title`, the retrieval-only
title baseline (no model), is evaluated on HotpotQA too.
Comparisons: --compare AFTER:BEFORE, where a side is a policy name, or names joined by `+`
(each task's EM averaged over those policies, as `seeds.py` pools seeds).

Writes benchmarks/results/NAME.json after every policy (evaluations are cached, so a rerun
resumes where it stopped).

Usage: python benchmarks/confirm.py untrained=local:smollm2 warm=learning-rmusique/chains
       shipped=learning-rmusique/grpo seed1=learning-rmusique/grpo-lr15-s1
       --compare shipped:untrained --compare shipped+seed1:warm --name confirm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from protocol import (
    EVAL,
    FRESH_HOTPOT,
    FRESH_WORLD,
    evaluate_cached,
    fresh_suites,
    paired,
    pooled_rows,
    resolve_policy,
    rows,
    summary,
    write,
)
from report import interval, signed
from rich.console import Console
from rich.table import Table

from tools.paths import sleuth_home

BASELINE = "title"  # the retrieval-only baseline's name among the policies
console = Console(width=150)


def retry_rate(rows_: list[dict[str, Any]]) -> float | None:
    """Searches right after a miss over searches that missed: how often a miss was followed
    by another search (None when no search missed)."""
    misses = sum(float(r.get("search_misses") or 0) for r in rows_)
    after = sum(float(r.get("searches_after_miss") or 0) for r in rows_)
    return round(after / misses, 3) if misses else None


def policy_block(rows_: list[dict[str, Any]]) -> dict[str, Any]:
    """A policy's figures on one suite: `summary`, the retry rate, and the per-task rows."""
    return {"summary": summary(rows_), "retry_rate": retry_rate(rows_), "per_task": rows_}


def refuse_cml(spec: str) -> None:
    """Exit when a stage folder comes from a run that trained on HotpotQA 101-300 (cml)."""
    record = sleuth_home() / spec / ".." / "pipeline.json"
    if ":" in spec or not record.exists():
        return
    config = json.loads(record.read_text()).get("config", {})
    if "cml" in config.get("stages", []) or config.get("cml_extra_tasks"):
        raise SystemExit(f"{spec}: its run has a cml stage, which trains on the HotpotQA "
                         "questions this confirmation holds out")


def side_rows(side: str, policies: dict[str, Any], suite: str) -> list[dict[str, Any]] | None:
    """A comparison side's per-task rows on `suite` (pooled over `a+b`), or None if a policy
    on it has not been evaluated there."""
    names = side.split("+")
    blocks = [policies.get(n, {}).get(suite) for n in names]
    if any(b is None for b in blocks):
        return None
    if len(blocks) == 1:
        return blocks[0]["per_task"]
    return pooled_rows([b["per_task"] for b in blocks])


def comparisons(pairs: list[str], policies: dict[str, Any]) -> list[dict[str, Any]]:
    """Every requested AFTER:BEFORE comparison whose sides are evaluated, per suite."""
    out = []
    for pair in pairs:
        after, _, before = pair.partition(":")
        for suite in ("world", "hotpotqa"):
            a, b = side_rows(after, policies, suite), side_rows(before, policies, suite)
            if a is not None and b is not None:
                out.append({"after": after, "before": before, "suite": suite, **paired(b, a)})
    return out


def check_pairs(pairs: list[str], names: list[str]) -> None:
    """Exit on a comparison that names an unknown policy or is not AFTER:BEFORE."""
    for pair in pairs:
        after, sep, before = pair.partition(":")
        unknown = {n for n in (after + "+" + before).split("+") if n not in names}
        if not sep or not after or not before or unknown:
            raise SystemExit(f"--compare {pair!r}: use AFTER:BEFORE with the names "
                             f"{', '.join(names)} (unknown: {', '.join(sorted(unknown)) or '-'})")


def main() -> None:
    """Evaluate every policy on the fresh sets, compare them, print the tables, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policies", nargs="+", metavar="NAME=POLICY")
    ap.add_argument("--compare", action="append", default=[], metavar="AFTER:BEFORE")
    ap.add_argument("--limit", type=int, default=None, help="First N tasks of each set.")
    ap.add_argument("--name", default="confirm", help="Writes benchmarks/results/NAME.json.")
    args = ap.parse_args()
    given = dict(p.partition("=")[::2] for p in args.policies)
    if BASELINE in given or any(not n or not s for n, s in given.items()):
        raise SystemExit(f"policies are NAME=POLICY, and {BASELINE!r} is the baseline's name")
    check_pairs(args.compare, [*given, BASELINE])
    resolved = {}
    for name, spec in given.items():
        refuse_cml(spec)
        resolved[name] = resolve_policy(spec)
    tasks = fresh_suites(args.limit)
    data: dict[str, Any] = {
        "protocol": {"world": {**FRESH_WORLD, "hops": list(FRESH_WORLD["hops"])},
                     "hotpotqa_questions": [FRESH_HOTPOT.start + 1, FRESH_HOTPOT.stop],
                     "limit": args.limit, "config": EVAL.model_dump(mode="json")},
        "specs": {name: recorded for name, (_, recorded, _) in resolved.items()},
        "policies": {}, "comparisons": []}
    title = evaluate_cached("local:smollm2", "hotpotqa-fresh", tasks["hotpotqa"], mode="retrieval",
                            say=console.print)
    data["policies"][BASELINE] = {"hotpotqa": policy_block(rows(title, "retrieval-title"))}
    for name, (load, _, weights) in resolved.items():
        data["policies"][name] = {}
        for suite, suite_tasks in tasks.items():
            result = evaluate_cached(load, f"{suite}-fresh", suite_tasks, weights=weights,
                                     say=console.print)
            data["policies"][name][suite] = policy_block(rows(result, "graph"))
        data["comparisons"] = comparisons(args.compare, data["policies"])
        path = write(args.name, data)  # after every policy: a stopped run keeps what it measured
    print_tables(data)
    console.print(f"wrote {Path(path).name}")


def print_tables(data: dict[str, Any]) -> None:
    """The policies' figures and the comparisons, as rich tables."""
    t = Table("policy", "world EM %", "HotpotQA EM %", "searches (world)",
              "after a miss (world)", "retry rate (world)")
    for name, p in data["policies"].items():
        world = p.get("world")
        t.add_row(name, f"{world['summary']['all']['em']:.1f}" if world else "–",
                  f"{p['hotpotqa']['summary']['all']['em']:.1f}",
                  f"{world['summary']['all']['searches']:.2f}" if world else "–",
                  f"{world['summary']['all']['searches_after_miss']:.2f}" if world else "–",
                  f"{world['retry_rate']:.2f}" if world and world["retry_rate"] is not None else "–")
    console.print(t)
    c = Table("comparison", "set", "EM gain (points)", "95% CI", "gained / lost")
    for r in data["comparisons"]:
        c.add_row(f"{r['after']} vs {r['before']}", r["suite"], signed(r["gain"]),
                  interval(r["ci95"]), f"{r['gained']} / {r['lost']}")
    console.print(c)


if __name__ == "__main__":
    main()
