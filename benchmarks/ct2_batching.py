"""Why the int8 engine batches by length: CTranslate2's `generate_batch` on prompts of mixed
lengths, one at a time, and of one length.

`generate_batch(include_prompt_in_result=False)` forwards a batch's prompts at once only up
to the shortest one; the rest of each longer prompt goes through the decoding loop a token
per step. This times SmolLM2-135M in int8 (one thread, as `agents.ct2` runs a batch) on 8
prompts of 120-400 tokens decoding 40 tokens each: as one batch, one at a time, and 8 prompts
of the mean length as one batch; median of `--repeats`.

Usage: python benchmarks/ct2_batching.py [--repeats 2]  (writes benchmarks/results/ct2_batching.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from protocol import alternate  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
LENGTHS = [120, 150, 180, 220, 260, 300, 350, 400]
NEW_TOKENS = 40


def main() -> None:
    """Convert, time the three shapes, print and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import ctranslate2
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    from agents.models import smollm2_folder

    folder = str(smollm2_folder())
    tok = AutoTokenizer.from_pretrained(folder)
    out = tempfile.mkdtemp(prefix="ct2-batching-")
    TransformersConverter(folder).convert(out, quantization="int8", force=True)
    gen = ctranslate2.Generator(out, device="cpu", intra_threads=1, compute_type="int8")
    text = " ".join(["the city of Varo was founded by Ada Lenn and its university is old"] * 60)
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def prompt(n: int) -> list[str]:
        return tok.convert_ids_to_tokens(ids[:n])

    mixed = [prompt(n) for n in LENGTHS]
    same = [prompt(sum(LENGTHS) // len(LENGTHS))] * len(LENGTHS)

    def run(batch: list[list[str]]) -> None:
        gen.generate_batch(batch, max_length=NEW_TOKENS, min_length=NEW_TOKENS, sampling_topk=1,
                           include_prompt_in_result=False)

    load = [round(x, 2) for x in os.getloadavg()]  # other jobs on the cores, if any
    run(mixed[:1])  # warm up
    shapes = {"mixed_lengths_one_batch": lambda: run(mixed),
              "one_at_a_time": lambda: [run([p]) for p in mixed],
              "one_length_one_batch": lambda: run(same)}
    times = alternate(shapes, args.repeats)
    median = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"summary": {**median, "mixed_over_one_at_a_time": round(
                  median["mixed_lengths_one_batch"] / median["one_at_a_time"], 2)},
              "prompt_lengths": LENGTHS, "new_tokens": NEW_TOKENS, "repeats": args.repeats,
              "seconds": times, "threads": 1, "load_average_at_start": load}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ct2_batching.json").write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary"])


if __name__ == "__main__":
    main()
