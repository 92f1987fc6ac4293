"""Experiment trackers for our own training loops, as TrainingArguments' `report_to` names them.

TRL's trainers log through transformers' callbacks; the research GRPO trainer and the CML loop
are our own loops, so `MetricsLogger` does for them what `TensorBoardCallback` and
`WandbCallback` do for a `Trainer`: every metrics row (the one written to `metrics.jsonl`)
goes to TensorBoard (`torch.utils.tensorboard`, into `output_dir/runs/<time>_<host>` or
`$TENSORBOARD_LOGGING_DIR`, tags `train/<key>` and `eval/<key>` as transformers rewrites them)
and to Weights & Biases (`wandb.init` / `wandb.log`; skipped with a warning when wandb is not
installed). `metrics.jsonl` and `curves.png` are written whatever `report_to` says.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SUPPORTED = ("tensorboard", "wandb")
TENSORBOARD_EXTRA = ("report_to='tensorboard' needs the tensorboard package: "
                     "pip install 'sleuth[tensorboard]' (or pip install tensorboard)")


def report_targets(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers to log to: "none" or None is none, "all" every installed one; an unknown
    or unsupported name, and wandb when it is not installed, are dropped with a warning."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    if "none" in names:
        return []
    if "all" in names:
        return [n for n in SUPPORTED if _installed(n)]
    out = []
    for name in dict.fromkeys(names):
        if name not in SUPPORTED:
            warnings.warn(f"report_to {name!r} is not supported by this training loop (only "
                          f"{', '.join(SUPPORTED)}): its metrics go to metrics.jsonl only",
                          stacklevel=2)
        elif name == "tensorboard" and not _installed(name):
            raise ImportError(TENSORBOARD_EXTRA)
        elif name == "wandb" and not _installed(name):
            warnings.warn("report_to 'wandb' but wandb is not installed (pip install wandb): "
                          "not logging to W&B", stacklevel=2)
        else:
            out.append(name)
    return out


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def tensorboard_dir(output_dir: str | Path, args: Any = None) -> Path:
    """Where TensorBoard events go, as transformers' `TensorBoardCallback` decides:
    `$TENSORBOARD_LOGGING_DIR`, else `args.logging_dir` (older transformers), else
    `output_dir/runs/<month><day>_<time>_<host>`."""
    from transformers.integrations.integration_utils import default_logdir

    chosen = os.getenv("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
    return Path(chosen).expanduser() if chosen else Path(output_dir) / default_logdir()


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics row's numbers under transformers' tracker names (`eval_em` -> `eval/em`,
    `loss` -> `train/loss`); the step itself and non-numbers are left out."""
    from transformers.integrations.integration_utils import rewrite_logs

    numbers = {k: float(v) for k, v in row.items()
               if k != "step" and isinstance(v, int | float) and math.isfinite(float(v))}
    return rewrite_logs(numbers)


class MetricsLogger:
    """Sends metrics rows to the trackers `report_to` names (none: a no-op).

        with MetricsLogger(args.report_to, tensorboard_dir(out, args), config=args.to_dict()) as log:
            log.log({"step": 1, "loss": 0.5})
    """

    def __init__(self, report_to: str | Sequence[str] | None, log_dir: str | Path, *,
                 run_name: str | None = None, config: Mapping[str, Any] | None = None):
        self.targets = report_targets(report_to)
        self.log_dir = Path(log_dir)
        self.tensorboard: Any = None
        self.wandb: Any = None
        self._own_wandb_run = False
        if "tensorboard" in self.targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(self.log_dir))
        if "wandb" in self.targets:
            import wandb

            self.wandb = wandb
            if wandb.run is None:  # as WandbCallback: join a run the user started
                wandb.init(project=os.getenv("WANDB_PROJECT", "huggingface"), name=run_name,
                           config=dict(config or {}))
                self._own_wandb_run = True

    def log(self, row: Mapping[str, Any], step: int | None = None) -> None:
        """Log one metrics row at `step` (default: the row's own `step`)."""
        if not self.targets:
            return
        step = int(row.get("step", 0) if step is None else step)
        values = scalars(row)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({**values, "train/global_step": step})

    def close(self) -> None:
        """Flush and close the trackers (a W&B run is finished only if this logger began it)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None and self._own_wandb_run:
            self.wandb.finish()
        self.wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SUPPORTED", "MetricsLogger", "report_targets", "scalars", "tensorboard_dir"]
