"""PDF documents: extracted by `tools.extract.extract_pdf`, ingested from files and folders,
fetched over real HTTP on loopback, capped in pages and bytes, clear errors when unreadable."""

from __future__ import annotations

import io
import json
import sys

import pytest

from tools.corpus_server import CorpusServer, Fault
from tools.documents import load_documents
from tools.embeddings import HashEmbedder
from tools.errors import ToolError
from tools.extract import MAX_PDF_PAGES, extract_pdf
from tools.knowledge import KnowledgeBase
from tools.web import fetch_page

pypdf = pytest.importorskip("pypdf", reason="the pdf extra (pip install 'sleuth[pdf]')")


def make_pdf(pages: list[str], *, title: str | None = None, password: str | None = None) -> bytes:
    """A real PDF, one line of Helvetica text per page, written by pypdf."""
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = pypdf.PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica")}))
    for text in pages:
        page = writer.add_blank_page(612, 792)
        stream = DecodedStreamObject()
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    if title:
        writer.add_metadata({"/Title": title})
    if password:
        writer.encrypt(password, algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


PAGES = ["Ada Lenn directed The Iron Harbour in 1961.", "Ada Lenn was born in the city of Varo.",
         "The Varo Courier was founded in 1877."]


def test_text_title_and_page_cap():
    raw = make_pdf(PAGES, title="Ada Lenn")
    got = extract_pdf(raw)
    assert got.title == "Ada Lenn" and all(p in got.text for p in PAGES)
    assert got.metadata == {"extractor": "pypdf", "pages": 3, "pages_read": 3}
    capped = extract_pdf(raw, max_pages=2)
    assert PAGES[1] in capped.text and PAGES[2] not in capped.text
    assert capped.metadata["pages_read"] == 2 and capped.metadata["pages_truncated"] is True
    with pytest.raises(ToolError) as e:
        extract_pdf(raw, max_bytes=len(raw) - 1)
    assert e.value.kind == "too_large"
    assert extract_pdf(make_pdf([""])) is None  # no text layer (a scan): no document


@pytest.mark.parametrize(("raw", "kind"), [
    (b"%PDF-1.7\nnot really a pdf", "corrupt"),
    (make_pdf(PAGES)[:300], "corrupt"),  # cut short: the index at its end is gone
    (make_pdf(PAGES, password="secret"), "encrypted"),
])
def test_unreadable_pdfs_are_clear_errors(raw, kind):
    with pytest.raises(ToolError) as e:
        extract_pdf(raw, name="paper.pdf")
    assert e.value.kind == kind and e.value.message.startswith("paper.pdf is ")


def test_missing_extra_says_how_to_install(monkeypatch):
    raw = make_pdf(PAGES)
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if not installed: import fails
    with pytest.raises(ToolError) as e:
        extract_pdf(raw)
    assert e.value.kind == "missing_extra" and "pip install 'sleuth[pdf]'" in e.value.message


def test_ingest_pdf_files_and_folders_then_search(tmp_path):
    folder = tmp_path / "papers"
    (folder / "sub").mkdir(parents=True)
    (folder / "lenn.pdf").write_bytes(make_pdf(PAGES[:2], title="Ada Lenn"))
    (folder / "sub" / "courier_history.pdf").write_bytes(make_pdf(PAGES[2:]))
    (folder / "notes.txt").write_text("Orla Press is a publisher founded in 1901.")
    docs = {d.doc_id: d for d in load_documents([folder])}
    assert set(docs) == {"lenn.pdf", "sub/courier_history.pdf", "notes.txt"}
    assert docs["lenn.pdf"].title == "Ada Lenn" and PAGES[1] in docs["lenn.pdf"].text
    assert docs["sub/courier_history.pdf"].title == "courier history"  # no title: the file name
    assert docs["lenn.pdf"].url.startswith("file://") and docs["lenn.pdf"].metadata["pages"] == 2
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    stats = kb.ingest_paths([folder, folder / "lenn.pdf"], progress=False)  # a file, too
    assert stats.documents == 3
    hits = kb.search("Varo Courier founded 1877", k=1, mode="fts")
    assert hits[0].doc_id == "sub/courier_history.pdf" and "1877" in hits[0].text
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    with pytest.raises(ToolError, match="broken.pdf is not a readable PDF"):
        kb.ingest_paths([folder], progress=False)


def test_fetch_reads_pdfs_over_http(small_world):
    paper = make_pdf(PAGES, title="Lenn")
    long = make_pdf([f"Page {i} of the manual." for i in range(MAX_PDF_PAGES + 10)])
    faults = [Fault(r"^/paper.pdf", body=paper, content_type="application/pdf"),
              Fault(r"^/download", body=paper, content_type="application/octet-stream"),
              Fault(r"^/manual.pdf", body=long, content_type="application/pdf"),
              Fault(r"^/broken.pdf", body=b"%PDF-1.4\ngarbage", content_type="application/pdf"),
              Fault(r"^/locked.pdf", body=make_pdf(PAGES, password="pw"),
                    content_type="application/pdf")]
    with CorpusServer(small_world.docs, faults=faults) as s:
        for path in ("/paper.pdf", "/download"):  # typed, or sniffed from its first bytes
            page = fetch_page(s.url + path, allow_hosts=[s.origin])
            assert page.content_type == "application/pdf" and page.title == "Lenn"
            assert all(p in page.text for p in PAGES) and not page.truncated
        page = fetch_page(s.url + "/manual.pdf", allow_hosts=[s.origin])
        assert page.truncated and page.metadata["pages_read"] == MAX_PDF_PAGES
        assert f"Page {MAX_PDF_PAGES - 1} of" in page.text and f"Page {MAX_PDF_PAGES} of" not in page.text
        for path, max_bytes, kind in (("/broken.pdf", 2_000_000, "corrupt"),
                                      ("/locked.pdf", 2_000_000, "encrypted"),
                                      ("/paper.pdf", 400, "too_large")):  # cut by the byte cap
            with pytest.raises(ToolError) as e:
                fetch_page(s.url + path, allow_hosts=[s.origin], max_bytes=max_bytes, retries=0)
            assert e.value.kind == kind and path in e.value.message


def test_cli_fetch_and_ingest_pdfs(sleuth_in_process, small_world, tmp_path):
    (tmp_path / "lenn.pdf").write_bytes(make_pdf(PAGES, title="Ada Lenn"))
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    faults = [Fault(r"^/paper.pdf", body=make_pdf(PAGES, title="Lenn"), content_type="application/pdf")]
    with CorpusServer(small_world.docs, faults=faults) as s:
        proc = sleuth_in_process("fetch", s.url + "/paper.pdf", "--allow-host", s.origin)
    assert PAGES[1] in proc.stdout and "application/pdf" in proc.stderr
    proc = sleuth_in_process("ingest", str(tmp_path / "lenn.pdf"), "--kb", str(tmp_path / "kb"),
                             "--json")
    assert json.loads(proc.stdout)["documents"] == 1
    proc = sleuth_in_process("ingest", str(tmp_path / "bad.pdf"), "--kb", str(tmp_path / "kb"),
                             check=False)
    assert proc.returncode == 1 and "bad.pdf is not a readable PDF" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
