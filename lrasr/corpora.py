"""Corpus cards: what a public speech corpus is, where to get it, and how lrasr reads it.

A card is ``corpora/<name>.yaml`` in the lrasr checkout (or the folder named by ``LRASR_CARDS``).
Every fact on a card names its source (``sources``); what could not be checked says "unknown".
A recipe's corpus entry may say ``card: NAME`` next to its local ``path``; loading the recipe then
checks the path against the card's expected layout and says what was expected when it differs.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lrasr.errors import LrasrError

CARDS_DIR = Path(os.environ.get("LRASR_CARDS", Path(__file__).resolve().parents[1] / "corpora"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ingest(_Strict):
    """How lrasr reads the corpus: a recipe corpus entry's ``format`` and the options it usually needs."""

    format: Literal["tsv", "csv", "kaldi", "commonvoice", "fairseq", "nemo", "folder", "parquet", "unlabeled", "text"]
    options: dict[str, Any] = Field(default_factory=dict)
    # steps that turn the distributed files into what ``format`` reads; empty when it reads them as is
    convert: str = ""
    notes: str = ""


class Layout(_Strict):
    """What the local ``path`` of a recipe entry must look like."""

    path_is: Literal["dir", "file"] = "dir"
    # globs relative to the path (or, for a file, to its folder): each must match at least one file
    required: list[str] = Field(default_factory=list)
    description: str = ""


class Card(_Strict):
    name: str
    title: str
    url: str
    licence: str
    size: str
    languages: list[str]
    kind: Literal["labeled", "unlabeled", "text"] = "labeled"
    speech: str = "unknown"  # read, conversational, broadcast, ...
    ingest: Ingest
    layout: Layout
    citation: str = "unknown"
    sources: dict[str, str] = Field(default_factory=dict)
    notes: str = ""


def cards_dir() -> Path:
    return Path(os.environ.get("LRASR_CARDS", CARDS_DIR))


@lru_cache(maxsize=64)
def _load(path: Path, mtime_ns: int) -> Card:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # PyYAML's messages span several lines (the offending text and a caret): keep one line with the place
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LrasrError(f"cannot read corpus card ({what})", path, mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise LrasrError("a corpus card must be a mapping of keys (name, title, url, ...)", path)
    try:
        card = Card.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise LrasrError(f"{loc}: {msg}", path) from None
    if card.name != path.stem:
        raise LrasrError(f"name: '{card.name}' differs from the file name '{path.stem}'", path)
    return card


def card_names() -> list[str]:
    folder = cards_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_card(name: str) -> Card:
    """The card ``name``; ``LrasrError`` listing the known cards when there is none."""
    path = cards_dir() / f"{name}.yaml"
    if not path.is_file() or "/" in name or name.startswith("."):
        known = ", ".join(card_names()) or "none"
        raise LrasrError(f"no corpus card named '{name}' in {cards_dir()}; known cards: {known}")
    return _load(path, path.stat().st_mtime_ns)


def list_cards() -> list[Card]:
    return [load_card(n) for n in card_names()]


# ``{option}`` in a layout glob stands for an ingest option of the recipe entry (Common Voice's
# ``{split}.tsv``): a release folder read with ``split: other`` need not hold validated.tsv.
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def layout_globs(card: Card, options: dict[str, Any] | None = None) -> list[str]:
    """The card's required globs with ``{option}`` filled from ``options`` (a recipe entry's values),
    else from the card's ``ingest.options`` defaults; an option with neither is left as ``<option>``."""
    values = {**card.ingest.options, **{k: v for k, v in (options or {}).items() if v is not None}}

    def fill(match: re.Match) -> str:
        value = values.get(match.group(1))
        return str(value) if value is not None else f"<{match.group(1)}>"

    return [_PLACEHOLDER.sub(fill, g) for g in card.layout.required]


def layout_mismatch(card: Card, path: Path, options: dict[str, Any] | None = None) -> str | None:
    """Why ``path`` does not look like ``card``'s corpus, or None when it does. ``options`` are the
    recipe entry's settings that layout globs may name (see ``layout_globs``)."""
    path = Path(path)
    if card.layout.path_is == "dir" and not path.is_dir():
        return f"expected a folder ({card.layout.description or 'see the card'})"
    if card.layout.path_is == "file" and not path.is_file():
        return f"expected a file ({card.layout.description or 'see the card'})"
    base = path if path.is_dir() else path.parent
    filled = layout_globs(card, options)
    missing = [i for i, g in enumerate(filled) if next(iter(base.glob(g)), None) is None]
    if missing:
        where = f"in {base}" if path.is_file() else "under it"
        hint = f" ({card.layout.description})" if card.layout.description else ""
        return f"expected {', '.join(filled[i] for i in missing)} {where}{hint}" + "".join(
            _other_values(card.layout.required[i], base) for i in missing)
    return None


def _other_values(template: str, base: Path) -> str:
    """For a glob with one ``{option}``: the values the files present would give it (``split: other_original``
    when the folder holds other_original.tsv), so the user sees what to set instead of guessing."""
    names = _PLACEHOLDER.findall(template)
    if len(names) != 1:
        return ""
    head, tail = template.split("{" + names[0] + "}", 1)
    rels = [m.relative_to(base).as_posix() for m in base.glob(_PLACEHOLDER.sub("*", template))]
    found = sorted({rel[len(head):len(rel) - len(tail)] for rel in rels})
    return f"; {names[0]}: could be {', '.join(found[:10])}" if found else ""


def card_problems(recipe: Any, check_layout: bool = True) -> list[str]:
    """Problems with the recipe's ``card:`` references: unknown cards, wrong format, wrong layout.

    One line per problem, each naming the entry's dotted key (``corpora.labeled[0]``).
    """
    problems = []
    for kind in ("unlabeled", "labeled", "text"):
        for i, entry in enumerate(getattr(recipe.corpora, kind)):
            name = getattr(entry, "card", None)
            if not name:
                continue
            key = f"corpora.{kind}[{i}]"
            try:
                card = load_card(name)
            except LrasrError as exc:
                problems.append(f"{key}.card: {exc}")
                continue
            fmt = getattr(entry, "format", None)
            if kind == "labeled" and card.ingest.format not in ("unlabeled", "text") and fmt != card.ingest.format:
                problems.append(f"{key}.format: '{fmt}', but card '{name}' is read with format "
                                f"'{card.ingest.format}'")
            if check_layout and entry.path.exists():
                why = layout_mismatch(card, entry.path, entry.model_dump(exclude_unset=True))
                if why:
                    problems.append(f"{key}.path: {entry.path} does not look like {card.title} (card '{name}'): "
                                    f"{why}; see `lrasr corpora show {name}`")
    return problems


def _escape_all(value: Any, escape: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escape_all(v, escape) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_all(v, escape) for v in value]
    return value


def recipe_snippet(card: Card) -> str:
    """The recipe lines that use this corpus (the path is the user's)."""
    kind = card.kind
    lines = ["corpora:", f"  {kind}:", f"    - card: {card.name}"]
    if kind == "labeled":
        lines.append(f"      format: {card.ingest.format}")
    lines.append("      path: /where/you/put/it" + ("" if card.layout.path_is == "dir" else "/<file>"))
    for key, value in card.ingest.options.items():
        lines.append(f"      {key}: {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return "\n".join(lines)


def render_card(card: Card) -> str:
    """A card as rich-markup text for `lrasr corpora show` (card text is escaped, not markup)."""
    from rich.markup import escape

    card = Card.model_validate(_escape_all(card.model_dump(), escape))
    out = [f"[bold]{card.title}[/] ({card.name})", ""]
    for label, value in (("url", card.url), ("licence", card.licence), ("size", card.size),
                         ("languages", ", ".join(card.languages)), ("kind", card.kind), ("speech", card.speech),
                         ("citation", card.citation)):
        out.append(f"[bold]{label}:[/] {value}")
    out += ["", f"[bold]layout:[/] the recipe path is a {'folder' if card.layout.path_is == 'dir' else 'file'}"
            + (f": {card.layout.description}" if card.layout.description else "")]
    for glob in card.layout.required:
        named = _PLACEHOLDER.findall(glob)
        note = "".join(f" (<{k}> = the entry's {k}:, default {card.ingest.options[k]})"
                       for k in named if k in card.ingest.options)
        out.append(f"  must contain: {_PLACEHOLDER.sub(lambda m: '<' + m.group(1) + '>', glob)}{note}")
    out += ["", f"[bold]ingest:[/] format {card.ingest.format}" + (f" - {card.ingest.notes}" if card.ingest.notes else "")]
    if card.ingest.convert:
        out += ["[bold]convert first:[/]", card.ingest.convert.rstrip()]
    out += ["", "[bold]recipe:[/]", recipe_snippet(card)]
    if card.sources:
        out += ["", "[bold]sources:[/]"] + [f"  {k}: {v}" for k, v in card.sources.items()]
    if card.notes:
        out += ["", "[bold]notes:[/] " + card.notes.strip()]
    return "\n".join(out)
