"""Reading documents from task files, corpus files, text, markdown and HTML."""

from __future__ import annotations

import json

import pytest

from tools.documents import Document, load_documents


def test_task_and_corpus_jsonl(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    doc = {"doc_id": "x:1", "title": "T", "text": "Body.", "gold": True}
    tasks.write_text("\n".join(json.dumps({"id": str(i), "question": "q", "docs": [doc]})
                               for i in range(3)) + "\n\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c1", "title": "C", "text": "Corpus text.",
                                  "url": "http://c/1"}) + "\n"
                      + json.dumps({"title": "No id", "text": "Hash id."}) + "\n")
    docs = list(load_documents([tasks, corpus]))
    assert [d.doc_id for d in docs][:2] == ["x:1", "c1"]  # task docs de-duplicated
    assert docs[0].metadata["gold"] is True and docs[1].url == "http://c/1"
    assert len(docs[2].doc_id) == 16


def test_text_markdown_html_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Plain text file.")
    (tmp_path / "sub" / "b.md").write_text("# Heading B\n\nMarkdown body.")
    (tmp_path / "c.html").write_text("<html><head><title>Page C</title></head><body><article>"
                                     "<p>An HTML body with enough words to count.</p>"
                                     "</article></body></html>")
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    docs = {d.doc_id: d for d in load_documents([tmp_path])}
    assert set(docs) == {"a.txt", "sub/b.md", "c.html"}
    assert docs["sub/b.md"].title == "Heading B" and "HTML body" in docs["c.html"].text


def test_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "ok", "text": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        list(load_documents([bad]))
    bad.write_text('{"title": "no text"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: .*text"):
        list(load_documents([bad]))
    with pytest.raises(FileNotFoundError):
        list(load_documents([tmp_path / "nope"]))
    (tmp_path / "x.docx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="unsupported file type"):
        list(load_documents([tmp_path / "x.docx"]))
    with pytest.raises(ValueError):
        Document(doc_id=" ", text="x")
