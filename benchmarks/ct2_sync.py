"""The int8 engine's weight sync: converting a LoRA policy to CTranslate2, through the disk
against in memory.

After every GRPO update the int8 engine merges the adapter into a copy of the policy and
converts it. Through the disk (the engine's first version): save the merged copy with
`save_pretrained`, let `TransformersConverter` load it back with `from_pretrained` and
convert it. In memory (`agents.ct2.convert_in_memory`): the converter gets the merged copy
itself, and the `gc.collect()` it calls after every layer is skipped. This times both on
SmolLM2-135M with a rank-16 LoRA adapter on every layer (random, so the merge changes the
weights), alternated, median of `--repeats`, and checks that both write the same model file.

Usage: python benchmarks/ct2_sync.py [--repeats 3]  (writes benchmarks/results/ct2_sync.json)
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from protocol import alternate, write  # noqa: E402


def main() -> None:
    """Time both conversions, print and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch
    from ctranslate2.converters import TransformersConverter

    from agents.ct2 import convert_in_memory
    from training.policy import load_policy, lora_config

    chat = load_policy("local:smollm2", peft_config=lora_config(16))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in chat.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    folder = Path(tempfile.mkdtemp(prefix="ct2-sync-"))

    def through_disk() -> Path:
        merged = copy.deepcopy(chat.model).merge_and_unload()
        merged.save_pretrained(folder / "hf")
        chat.tokenizer.save_pretrained(folder / "hf")
        TransformersConverter(str(folder / "hf")).convert(str(folder / "disk"), quantization="int8",
                                                          force=True)
        shutil.rmtree(folder / "hf")
        return folder / "disk"

    def in_memory() -> Path:
        merged = copy.deepcopy(chat.model).merge_and_unload()
        convert_in_memory(merged, chat.tokenizer, folder / "memory", "int8")
        return folder / "memory"

    load = [round(x, 2) for x in os.getloadavg()]  # other jobs on the cores, if any
    ways = {"through_disk": through_disk, "in_memory": in_memory}
    times = alternate(ways, args.repeats)
    same = all((folder / "disk" / f).read_bytes() == (folder / "memory" / f).read_bytes()
               for f in ("model.bin", "config.json", "vocabulary.json"))
    shutil.rmtree(folder, ignore_errors=True)
    median = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"summary": {"through_disk_s": median["through_disk"],
                          "in_memory_s": median["in_memory"],
                          "speedup": round(median["through_disk"] / median["in_memory"], 2),
                          "identical_files": same},
              "model": "SmolLM2-135M-Instruct, rank-16 LoRA on every layer, int8",
              "repeats": args.repeats, "seconds": times, "load_average_at_start": load}
    path = write("ct2_sync", result)
    print(result["summary"], f"-> {path.name}")


if __name__ == "__main__":
    main()
