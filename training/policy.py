"""The policy layer: where GRPO, SFT and the `train` commands get a trainable policy.

It owns loading a *fresh* trainable `LocalChatModel` from a local spec (never the model that
`load_chat_model` caches for the whole process, which rollouts and evaluation may be using),
adding LoRA through PEFT, continuing the training of a shipped adapter, saving a policy as a
plain HF folder, and putting saved weights back into a live policy (checkpoints).

LoRA has one way in, PEFT's own `LoraConfig` (`lora_config(r)` gives the project's default),
passed as `peft_config` as TRL's trainers take it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.models import POLICY_CARD, LocalChatModel, ModelSpec, parse_spec, policy_settings, with_adapter
from tools.hf_loading import hf_load

if TYPE_CHECKING:
    from peft import LoraConfig

LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOCAL_ONLY = "training needs a local model: local:smollm2, local:smollm2-sleuth or hf:<folder>"


def lora_config(r: int = 16, layers: Sequence[int] | None = None) -> LoraConfig:
    """The project's LoRA: rank `r`, alpha 2r, no dropout, every linear layer, causal LM;
    `layers`: only these decoder layers (PEFT's `layers_to_transform`), e.g. `top_layers`."""
    from peft import LoraConfig

    if layers is None:
        return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    # PEFT takes `layers_to_transform` only with module names, not "all-linear": these are
    # every linear layer of a Llama-family decoder layer (SmolLM2's)
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=list(LLAMA_LINEAR), layers_to_transform=sorted(layers))


def top_layers(model: str | LocalChatModel, n: int) -> list[int]:
    """The indices of the top `n` decoder layers of a local model. LoRA on these alone trains
    faster: below the lowest adapted layer nothing needs a gradient, so backward stops there."""
    if isinstance(model, LocalChatModel):
        total = int(model.model.config.num_hidden_layers)
    else:
        from transformers import AutoConfig

        total = int(AutoConfig.from_pretrained(_spec(model).folder).num_hidden_layers)
    if not 1 <= n <= total:
        raise ValueError(f"top layers: {n} is not between 1 and the model's {total} layers")
    return list(range(total - n, total))


def peft_config_from(lora: bool, lora_r: int,
                     peft_config: LoraConfig | None = None) -> LoraConfig | None:
    """`peft_config` when given, else the project's LoRA of rank `lora_r` when `lora` (the
    `lora=`/`lora_r=` arguments that the training functions keep for compatibility)."""
    if peft_config is not None or not lora:
        return peft_config
    return lora_config(lora_r)


def is_peft(model: Any) -> bool:
    """Whether the model carries PEFT adapters (LoRA) rather than plain trainable weights."""
    return hasattr(model, "peft_config")


def _spec(model: str) -> ModelSpec:
    spec = parse_spec(model)
    if not spec.is_local:
        raise ValueError(f"{LOCAL_ONLY}, not {model!r}")
    return spec


def load_policy(model: str | LocalChatModel, *,
                peft_config: LoraConfig | None = None) -> LocalChatModel:
    """A trainable policy: freshly loaded from a local spec, or the `LocalChatModel` given.

    With `peft_config`, the policy trains a LoRA adapter: for `local:smollm2-sleuth`, the
    shipped adapter itself, trainable (training continues from it, with its own rank; the
    result is again one adapter); otherwise a new adapter as `peft_config` describes. Without
    it, the full weights train (the shipped adapter merged into them). A `LocalChatModel`
    passed in is trained in place: its weights are the policy's; LoRA is added when asked
    and not already present.
    """
    if isinstance(model, LocalChatModel):
        chat = model
    else:
        spec = _spec(model)
        card = policy_settings(spec.adapter) if spec.adapter is not None else {}
        chat = LocalChatModel.from_pretrained(spec.folder, model_name=f"policy:{spec.model_name}",
                                              **card)
        if spec.adapter is not None:
            chat.model = with_adapter(chat.model, spec.adapter, trainable=peft_config is not None)
    if peft_config is not None and not is_peft(chat.model):
        from peft import get_peft_model

        chat.model = get_peft_model(chat.model, copy.deepcopy(peft_config))
    chat.close()  # the decoder must see the (wrapped) model it now holds
    return chat


@contextmanager
def training_only_layers(chat: LocalChatModel, layers: Sequence[int]) -> Iterator[int]:
    """Within the block only the weights in these decoder layers train (the rest keep their
    values, and backward stops below the lowest); yields how many tensors still train."""
    wanted = set(layers)
    frozen = [p for name, p in chat.model.named_parameters()
              if p.requires_grad and _layer_of(name) not in wanted]
    for p in frozen:
        p.requires_grad_(False)
    try:
        left = len(trainable_parameters(chat))
        if not left:
            raise ValueError(f"no trainable weight lies in decoder layers {sorted(wanted)}")
        yield left
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _layer_of(name: str) -> int | None:
    """The decoder layer a weight belongs to (None: embeddings, the final norm, the head)."""
    found = re.search(r"\.layers\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def trainable_parameters(chat: LocalChatModel) -> list[Any]:
    """The parameters an optimiser steps: the adapter's with LoRA, else all of them."""
    return [p for p in chat.model.parameters() if p.requires_grad]


def save_weights(chat: LocalChatModel, path: str | Path) -> Path:
    """The policy's trainable state as it is (a LoRA adapter alone, or the full model) and its
    tokenizer: what a checkpoint keeps and `restore_weights` reads back."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chat.model.save_pretrained(path)
    chat.tokenizer.save_pretrained(path)
    return path


def restore_weights(chat: LocalChatModel, path: str | Path) -> None:
    """Put weights saved by `save_weights` back into the live policy (in place)."""
    path = Path(path)
    if is_peft(chat.model):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(chat.model, load_file(path / "adapter_model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        with hf_load():
            trained = AutoModelForCausalLM.from_pretrained(path)
        chat.model.load_state_dict(trained.state_dict())
    chat.close()  # the decoder restarts without prefixes cached under the old weights


def save_policy(chat: LocalChatModel, path: str | Path) -> Path:
    """Save a trained policy as a plain HF folder, loadable with `hf:DIR` (LoRA merged into
    a copy; the adapter itself kept in `DIR/adapter/`), with its policy card (`sleuth.json`:
    whether it runs with the prompts' worked examples, whether it judges passages, which prompt
    files it was trained on)."""
    path = Path(path)
    model = chat.model
    card = json.dumps({"prompt_examples": chat.prompt_examples,
                       "judges_passages": chat.judges_passages, "prompts": chat.prompts}) + "\n"
    if is_peft(model):
        model.save_pretrained(path / "adapter")
        (path / "adapter" / POLICY_CARD).write_text(card)
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path)
    chat.tokenizer.save_pretrained(path)
    (path / POLICY_CARD).write_text(card)
    return path


__all__ = ["LOCAL_ONLY", "is_peft", "load_policy", "lora_config", "peft_config_from", "restore_weights",
           "save_policy", "save_weights", "top_layers", "trainable_parameters",
           "training_only_layers"]
