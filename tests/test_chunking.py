"""Sentence-aware chunking."""

from __future__ import annotations

import pytest

from tools.chunking import chunk_text, split_sentences


def test_split_sentences_keeps_abbreviations_and_initials():
    text = ("Dr. Smith met J. R. Tolkien in Oxford. They talked until 3 a.m. about the war! "
            "Was it 1936? \"Yes,\" he said.\n\nA new paragraph")
    assert split_sentences(text) == [
        "Dr. Smith met J. R. Tolkien in Oxford.", "They talked until 3 a.m. about the war!",
        "Was it 1936?", "\"Yes,\" he said.", "A new paragraph"]


def test_chunks_hold_whole_sentences_within_the_word_budget_with_overlap():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(20)]
    chunks = chunk_text(" ".join(sentences), max_words=30, overlap=1)
    assert [len(c.split()) for c in chunks] == [28] * 6 + [14]  # 4 whole sentences fit in 30 words
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert split_sentences(a)[-1] == split_sentences(b)[0]  # one sentence of overlap
    covered = {s for c in chunks for s in split_sentences(c)}
    assert covered == set(sentences)


def test_long_sentence_is_cut_into_windows_and_short_text_is_one_chunk():
    words = " ".join(f"w{i}" for i in range(250))
    chunks = chunk_text(words, max_words=100, overlap=0)
    assert [len(c.split()) for c in chunks] == [100, 100, 50]
    assert chunk_text("One short text.", max_words=100) == ["One short text."]
    assert chunk_text("   ") == []
    with pytest.raises(ValueError):
        chunk_text("x", max_words=0)
