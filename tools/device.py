"""Where models run: the one place that decides between a GPU and the CPU.

CUDA when present (bfloat16 weights there), else the CPU in fp32 (bf16 is slower on CPUs
without bf16 units). `SLEUTH_DEVICE=cpu` (or `cuda`, `cuda:1`) overrides the choice; the
chat models, the embedder and the trainers' TRL/Accelerate settings all read it here.
"""

from __future__ import annotations

import os
from typing import Any


def device(requested: str = "auto") -> str:
    """The device to load a model on: `requested`, or for "auto" `$SLEUTH_DEVICE`, else
    "cuda" when a CUDA device is visible, else "cpu"."""
    import torch

    if requested != "auto":
        return requested
    chosen = os.environ.get("SLEUTH_DEVICE", "").strip()
    if chosen:
        return chosen
    return "cuda" if torch.cuda.is_available() else "cpu"


def on_gpu(requested: str = "auto") -> bool:
    """Whether `device(requested)` is a CUDA device."""
    return device(requested).startswith("cuda")


def dtype(requested: str = "auto") -> Any:
    """The weights' dtype on that device: bfloat16 on CUDA, float32 on the CPU."""
    import torch

    return torch.bfloat16 if on_gpu(requested) else torch.float32


def of(model: Any) -> Any:
    """The torch device a loaded model's weights are on (where its input tensors go)."""
    import torch

    found = getattr(model, "device", None)
    if isinstance(found, torch.device):
        return found
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def trainer_settings() -> dict[str, Any]:
    """The TRL/Accelerate arguments for this device: `use_cpu` and `bf16`."""
    gpu = on_gpu()
    return {"use_cpu": not gpu, "bf16": gpu}
