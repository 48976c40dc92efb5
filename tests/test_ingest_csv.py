"""CSV transcript tables read with the csv module's quoting: quoted commas, doubled quotes and line
breaks inside a field; errors and rejects name the physical line where the record starts."""

from __future__ import annotations

import pytest

from lrasr.data.ingest import ingest_corpus
from lrasr.errors import LrasrError
from lrasr.recipe import LabeledCorpus

TABLE = (
    b"path,text,speaker\n"  # 1
    b'a.wav,"first line\nsecond, line",s1\n'  # 2-3
    b'b.wav,"he said ""hi""",s2\n'  # 4
    b"\n"  # 5
    b"c.wav,only,two,many\n"  # 6: one field too many
    b'd.wav,"multi\n\nline with a blank",s3\n'  # 7-9
    b'e.wav,"bad \xff bytes\nmore",s4\n'  # 10-11: not UTF-8 on line 10
    b'f.wav,"x\nnot \xfe utf-8",s5\r\n'  # 12-13: not UTF-8 on line 13
    b"g.wav,plain,s6\n"  # 14
)


def _read(tmp_path, data: bytes):
    path = tmp_path / "transcripts.csv"
    path.write_bytes(data)
    return ingest_corpus(LabeledCorpus(format="csv", path=path))


def test_quoted_newlines_commas_and_quotes(tmp_path):
    items, rejects = _read(tmp_path, TABLE)
    assert [(it.id, it.line, it.speaker) for it in items] == [("a", 2, "s1"), ("b", 4, "s2"), ("d", 7, "s3"),
                                                              ("g", 14, "s6")]
    assert items[0].text == "first line\nsecond, line"
    assert items[1].text == 'he said "hi"'
    assert items[2].text == "multi\n\nline with a blank"
    assert items[0].audio == tmp_path / "a.wav"
    got = [(r["line"], r["reason"]) for r in rejects.rows]
    assert [line for line, _ in got] == [6, 10, 12]
    assert got[0][1] == "malformed row: 4 fields, header has 3"
    assert got[1][1].startswith("undecodable text:") and "inside this record" not in got[1][1]
    assert got[2][1].startswith("undecodable text:") and got[2][1].endswith("(line 13, inside this record)")
    # every record is accounted for: 7 data records = 4 items + 3 rejects
    assert len(items) + len(rejects) == 7


def test_quote_never_closed_is_one_error_naming_its_line(tmp_path):
    data = b'path,text\na.wav,fine\nb.wav,"opened here\nc.wav,swallowed\nd.wav,swallowed too\n'
    with pytest.raises(LrasrError, match=r"transcripts\.csv:3: a quoted field opened on this line is never closed"):
        _read(tmp_path, data)
    # also when the unclosed record is the last line itself
    for last in (b'e.wav,"open\n', b'e.wav,"open'):
        with pytest.raises(LrasrError, match=r"transcripts\.csv:3: a quoted field opened"):
            _read(tmp_path, b'path,text\na.wav,fine\n' + last)


def test_header_with_quoted_names_and_tsv_keeps_quotes_literally(tmp_path):
    items, rejects = _read(tmp_path, b'"path","text"\n"x.wav","a ""b"", c"\n')
    assert [(it.id, it.text, it.line) for it in items] == [("x", 'a "b", c', 2)] and not rejects.rows
    tsv = tmp_path / "t.tsv"
    tsv.write_bytes(b'path\ttext\ny.wav\t"quoted\n')  # a TSV quote is a character, not quoting
    items, rejects = ingest_corpus(LabeledCorpus(format="tsv", path=tsv))
    assert [(it.id, it.text) for it in items] == [("y", '"quoted')] and not rejects.rows
