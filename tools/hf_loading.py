"""Loading Hugging Face models from several threads of one process.

transformers 5 swaps class attributes while `from_pretrained` runs and puts back what it found
when it ends (`transformers.initialization.no_tie_weights` replaces `PreTrainedModel.tie_weights`
with a no-op). Two loads on two threads can interleave so that the no-op is what gets put
back; from then on every load of a tied-embedding model (SmolLM2) leaves `lm_head` MISSING on
the meta device. Sleuth loads on several threads at once (research runs load the embedder, the
ct2 engine's weight sync used to load the merged model on its own thread to convert it), and
that is how a GRPO step on the int8 engine came to fail every call after its first weight sync.
Four threads loading a tiny tied Llama 30 times each reproduce it. So every load in sleuth
goes through `hf_load()`: one at a time, and a `tie_weights` broken by a load elsewhere (a
library's own thread) is put back first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.RLock()
_TIE_WEIGHTS: list = []  # transformers' own, taken at the first hf_load (before any load of ours)


def tie_weights_intact() -> bool:
    """Whether `PreTrainedModel.tie_weights` is still transformers' own."""
    from transformers import PreTrainedModel

    return "no_tie_weights" not in PreTrainedModel.tie_weights.__qualname__


@contextlib.contextmanager
def hf_load() -> Iterator[None]:
    """Hold the process's load lock, with transformers' progress bars off, inside this block."""
    from transformers import PreTrainedModel
    from transformers.utils import logging as hf_logging

    with _LOCK:
        if not _TIE_WEIGHTS and tie_weights_intact():
            _TIE_WEIGHTS.append(PreTrainedModel.tie_weights)
        if _TIE_WEIGHTS and not tie_weights_intact():
            PreTrainedModel.tie_weights = _TIE_WEIGHTS[0]
        enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if enabled:
                hf_logging.enable_progress_bar()
