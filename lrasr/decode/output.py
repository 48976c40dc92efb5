"""Where transcripts go: stdout, one file, or one subtitle file per input; tuned LM weights."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Sequence

from lrasr.data.manifest import unique_stems
from lrasr.decode.formats import WRITERS
from lrasr.errors import LrasrError
from lrasr.io import write_text_atomic

TUNED = "tuned.json"


def tuned_params(lm_dir: str | Path) -> dict:
    """alpha/beta found by `lrasr lm tune` for this LM (``{}`` when it was never tuned)."""
    path = Path(lm_dir)
    path = path / TUNED if path.is_dir() else path.parent / TUNED  # an .arpa/.bin file: look beside it
    if not Path(lm_dir).exists() or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LrasrError(f"not valid JSON ({exc}); delete it and run `lrasr lm tune` again", path) from None
    return {k: float(data[k]) for k in ("alpha", "beta") if isinstance(data.get(k), (int, float))}


def check_output(output: str | Path | None, inputs: Sequence[str | Path]) -> None:
    """Refuse, before any work, an --output that would replace a recording or an input (a forgotten
    output name makes the first recording the output: ``-o talk1.wav talk2.wav``)."""
    from lrasr.decode.transcribe import AUDIO_EXTENSIONS

    if output is None or str(output).endswith(("/", os.sep)):
        return
    target = Path(output)
    if not target.is_file():
        return
    if target.suffix.lower() in AUDIO_EXTENSIONS or any(
            Path(i).exists() and Path(i).resolve() == target.resolve() for i in inputs):
        raise LrasrError("--output is an existing audio file or one of the inputs; refusing to overwrite it "
                         "(give a new file name such as transcripts.txt, or a folder)", target)


def _unique_names(results) -> list[str]:
    return unique_stems([r.path for r in results], ".")


def write_results(results: Sequence, fmt: str, output: str | Path | None, stdout=None) -> list[Path]:
    """Write ``FileResult``s in ``fmt``. Subtitles of several inputs go one file per input into the
    folder ``output``; everything else is one file (or stdout when ``output`` is None)."""
    writer = WRITERS[fmt]
    if fmt == "jsonl":  # the one format with room for why a transcript is empty
        writer = functools.partial(writer, errors=[r.error for r in results])
    items = [(str(r.path), r.hypothesis) for r in results]
    if output is None:
        text = writer(items)
        if stdout is not None:
            stdout.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, end="")
        return []
    # "out/" names a folder even before it exists (Path() would drop the slash and write a file "out")
    folder = str(output).endswith(("/", os.sep)) or Path(output).is_dir()
    output = Path(output)
    if folder:
        if output.exists() and not output.is_dir():
            raise LrasrError("--output ends in a slash (a folder) but a file of that name exists", output)
        output.mkdir(parents=True, exist_ok=True)
    if fmt in ("srt", "vtt") and (len(items) > 1 or folder):
        if output.exists() and not output.is_dir():
            raise LrasrError(f"{fmt} for several inputs needs --output to be a folder (one file per input)", output)
        output.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, item in zip(_unique_names(results), items):
            path = output / f"{name}.{fmt}"
            write_text_atomic(path, writer([item]))
            paths.append(path)
        return paths
    if output.is_dir():
        output = output / f"transcripts.{fmt}"
    write_text_atomic(output, writer(items))
    return [output]
