"""Loads on several threads keep a tied model's output head (tools.hf_loading)."""

import threading

import pytest

from tools.hf_loading import hf_load, tie_weights_intact


@pytest.fixture(scope="module")
def tied_folder(tmp_path_factory):
    """A saved tiny Llama whose output head is tied to its input embedding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tied")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def _load(folder):
    from transformers import AutoModelForCausalLM

    with hf_load():
        return AutoModelForCausalLM.from_pretrained(folder)


def test_interleaved_loads_that_broke_tie_weights_are_mended(tied_folder):
    from transformers.initialization import no_tie_weights

    with hf_load():  # takes transformers' own tie_weights
        pass
    first, second = no_tie_weights(), no_tie_weights()
    first.__enter__()
    second.__enter__()  # a second thread's load, begun inside the first: it saves the no-op
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)  # ...and puts the no-op back for good
    assert not tie_weights_intact()
    model = _load(tied_folder)
    assert tie_weights_intact()
    assert not model.lm_head.weight.is_meta
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_loads_on_many_threads_keep_the_head_tied(tied_folder):
    models, errors = [], []

    def work():
        try:
            models.extend(_load(tied_folder) for _ in range(8))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(models) == 32
    assert tie_weights_intact()
    assert all(m.lm_head.weight is m.model.embed_tokens.weight for m in models)
