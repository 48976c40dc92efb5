"""Tab-separated tables as people write them, read record by record.

Two conventions meet in users' TSVs. Common Voice and most scripts write every field literally, so a
sentence may begin with a quote (``"Hello," he said.``) that encloses nothing. Spreadsheets (Excel's
"Text (Tab delimited)", LibreOffice) enclose a field in double quotes when it holds a tab, a quote or a
line break, doubling the quotes inside (RFC 4180 with tabs). A field is therefore read as quoted only
when it is quoted exactly that way: it starts with a quote, every inner quote is doubled, and the
closing quote stands right before a tab or the end of the record. Any other field is literal.
"""

from __future__ import annotations

from typing import Iterator

MAX_JOINED_LINES = 50  # a quoted field with line breaks (a cell with Alt+Enter) spans at most this many more


def split_fields(text: str, allow_open: bool = False) -> list[str] | None:
    """The fields of one record ``text`` (a line, or lines joined with newlines), unquoted where they
    are quoted as spreadsheets quote them. With ``allow_open``, None when a quoted field is still open
    at the end of ``text`` (its closing quote may be on a later line); without, such a field is literal."""
    fields: list[str] = []
    start = 0
    while True:
        if text.startswith('"', start):
            value, end = _quoted(text, start)
            if value is None and end is None and allow_open:
                return None
            if value is not None:
                fields.append(value)
                if end == len(text):
                    return fields
                start = end + 1  # past the tab
                continue
        tab = text.find("\t", start)
        if tab < 0:
            fields.append(text[start:])
            return fields
        fields.append(text[start:tab])
        start = tab + 1


def _quoted(text: str, start: int) -> tuple[str | None, int | None]:
    """(value, index after the closing quote) of the quoted field opening at ``text[start]``;
    (None, None) when it is still open at the end of ``text``; (None, index) when a quote inside is
    neither doubled nor closing (the field is literal text)."""
    parts = []
    pos = start + 1
    while True:
        quote = text.find('"', pos)
        if quote < 0:
            return None, None
        parts.append(text[pos:quote])
        after = quote + 1
        if text.startswith('"', after):
            parts.append('"')
            pos = after + 1
        elif after == len(text) or text[after] == "\t":
            return "".join(parts), after
        else:
            return None, quote


def records(lines: list[tuple[int, str | None, str]]) -> Iterator[tuple[int, list[str] | None, str]]:
    """(number of the record's first line, fields, "") of each non-blank record of a TSV given as
    ``lrasr.data.ingest.split_lines`` gives it, the header first; (number, None, reason) for a line that
    is not UTF-8. A quoted field may run over later lines (``_joined``)."""
    width = None
    index = 0
    while index < len(lines):
        number, text, why = lines[index]
        index += 1
        if text is None:
            yield number, None, why
            continue
        if not text.strip():
            continue
        fields = split_fields(text, allow_open=width is not None)
        if fields is None:
            fields, used = _joined(lines, index - 1, width)
            index += used
        if width is None:
            width = len(fields)
        yield number, fields, ""


def _joined(lines: list[tuple[int, str | None, str]], index: int, width: int) -> tuple[list[str], int]:
    """(fields, lines used after the first) of the record starting at ``lines[index]``, whose last
    quoted field is open at the end of its line: the following lines are its continuation up to the
    closing quote if that gives ``width`` fields. Otherwise the line alone, that field literal (a stray
    quote must not swallow the rows after it): a line that is a row of ``width`` fields by itself ends
    the search. When the open field is the record's first, the line closing it has ``width`` fields
    like any row, so there the first line is judged instead: a row of ``width`` fields by itself is
    literal (``"Hello," she said<TAB>a.wav``), a shorter one is continued."""
    text = lines[index][1] or ""
    first_open = _first_open(text)
    if first_open and len(split_fields(text)) >= width:
        return split_fields(text), 0
    for used in range(1, MAX_JOINED_LINES + 1):
        if index + used >= len(lines):
            break
        more = lines[index + used][1]
        if more is None:
            break
        row_alone = len(split_fields(more)) == width
        if row_alone and not first_open:
            break
        text += "\n" + more
        fields = split_fields(text, allow_open=True)
        if fields is not None:
            if len(fields) == width:
                return fields, used
            break
        if row_alone and first_open and _first_open(text):  # still open after a whole row: the quote was literal
            break
        first_open = first_open and _first_open(text)  # once the first field closed, a later one is open
    return split_fields(lines[index][1] or ""), 0


def _first_open(text: str) -> bool:
    """Whether ``text`` starts with a quoted field that is still open at its end."""
    return text.startswith('"') and _quoted(text, 0) == (None, None)
