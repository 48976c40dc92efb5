"""Recipe validation errors as a user reads them: one line per problem, the key's dotted path, the
closest known key for a misspelt one, the choices for a missing one (instead of pydantic's text)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, source: Path | str, root: type[BaseModel]) -> str:
    """One line per problem of ``root`` (the recipe model) validating a file: ``source: key.path: message``,
    with the closest known key for an unknown one and the choices for a missing one."""
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x in ("function-after",)))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            msg += _did_you_mean(root, loc)
        if e["type"] == "missing" and loc and isinstance(loc[-1], str):
            msg = "required key missing" + _choices(root, loc)  # pydantic says 'Field required'
        lines.append(f"{source}: {_format_loc(loc)}: {msg}")
    return "\n".join(lines)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _section_of(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model holding the key at ``loc`` (``corpora.labeled[0].format`` -> LabeledCorpus)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _section_model(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def _did_you_mean(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """" (did you mean X?)" for a misspelt key, from the fields of the section it sits in; else ""."""
    model = _section_of(root, loc)
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6) if model else []
    return f" (did you mean {close[0]}?)" if close else ""


def _choices(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """": one of a, b, c" for a missing key whose values are a fixed list (a corpus's format); else ""."""
    model = _section_of(root, loc)
    field = model.model_fields.get(str(loc[-1])) if model else None
    values = [a for a in get_args(field.annotation) if isinstance(a, str)] if field else []
    return f": one of {', '.join(values)}" if values else ""
