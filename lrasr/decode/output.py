"""Where transcripts go: stdout, one file, or one subtitle file per input; tuned LM weights; the whole
`lrasr transcribe` command as one function (``transcribe_to``), resumable when it writes to files."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from lrasr.data.manifest import unique_stems
from lrasr.decode.formats import FORMATS, WRITERS
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


SUBTITLES = ("srt", "vtt")


def _names_folder(output: str | Path) -> bool:
    # "out/" names a folder even before it exists (Path() would drop the slash and write a file "out")
    return str(output).endswith(("/", os.sep)) or Path(output).is_dir()


def check_destination(fmt: str, output: str | Path | None, count: int) -> None:
    """Refuse, before any work, a destination that cannot hold ``count`` recordings in ``fmt``.

    srt/vtt hold one recording each (every recording's cues start at 00:00, so cues of several in one
    file overlap and no player can use it): several recordings need ``output`` to be a folder, which
    gets one subtitle file per recording. A name that does not exist yet is that folder unless it ends
    in a transcript extension (``-o all.srt`` means a file); stdout and an existing file are refused.
    """
    if output is not None and str(output).endswith(("/", os.sep)) and Path(output).exists() \
            and not Path(output).is_dir():
        raise LrasrError("--output ends in a slash (a folder) but a file of that name exists", output)
    if fmt not in SUBTITLES or count <= 1:
        return
    if output is None:
        raise LrasrError(f"--format {fmt} for {count} recordings: a subtitle file holds one recording; add "
                         f"--output FOLDER/ to get one .{fmt} per recording, named after it")
    target = Path(output)
    if _names_folder(output) or (not target.exists() and target.suffix.lower() not in {f".{f}" for f in WRITERS}):
        return
    raise LrasrError(f"--format {fmt} for {count} recordings needs --output to be a folder (one .{fmt} per "
                     f"recording, named after it), not a file; give a folder such as subs/", output)


def _to_stdout(text: str) -> None:
    """``text`` as UTF-8 bytes, exactly: like the output files whatever the locale, and not through rich
    (its console turned tsv's tabs into spaces and would render ``:name:`` in a file name as an emoji)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
    else:
        buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def _warn_renamed(results: Sequence, names: Sequence[str], fmt: str) -> None:
    """Recordings with the same name in different folders get numbered subtitle files: say which is which."""
    renamed = [(r.path, n) for r, n in zip(results, names) if n != Path(r.path).stem]
    if renamed:
        from rich.markup import escape

        from lrasr.report import warn

        shown = ", ".join(f"{escape(str(p))} -> {escape(n)}.{fmt}" for p, n in renamed[:3])
        warn(f"{len(renamed)} recording(s) share a file name with an earlier one; their subtitle files are "
             f"numbered: {shown}{' ...' if len(renamed) > 3 else ''}")


def write_results(results: Sequence, fmt: str, output: str | Path | None) -> list[Path]:
    """Write ``FileResult``s in ``fmt`` to stdout (``output`` None), one file, or a folder: subtitles go
    one file per input into a folder (refused elsewhere for several inputs, see ``check_destination``);
    every other format is one file, ``transcripts.<fmt>`` in a folder."""
    check_destination(fmt, output, len(results))
    writer = WRITERS[fmt]
    if fmt == "jsonl":  # the one format with room for why a transcript is empty
        writer = functools.partial(writer, errors=[r.error for r in results])
    items = [(str(r.path), r.hypothesis) for r in results]
    if output is None:
        _to_stdout(writer(items))
        return []
    folder = output_is_folder(fmt, output, len(items))  # the rule transcribe_to's journal follows too
    output = Path(output)
    if folder and fmt in SUBTITLES:
        output.mkdir(parents=True, exist_ok=True)
        paths = []
        names = unique_stems([r.path for r in results], ".")
        for name, item in zip(names, items):
            path = output / f"{name}.{fmt}"
            write_text_atomic(path, writer([item]))
            paths.append(path)
        _warn_renamed(results, names, fmt)
        return paths
    if folder:
        output.mkdir(parents=True, exist_ok=True)
        output = output / f"transcripts.{fmt}"
    write_text_atomic(output, writer(items))
    return [output]


def output_is_folder(fmt: str, output: str | Path, count: int) -> bool:
    """Whether ``write_results`` makes ``output`` a folder for ``count`` recordings in ``fmt``."""
    return _names_folder(output) or (fmt in SUBTITLES and count > 1)


def transcribe_to(inputs: Sequence[str | Path], model_dir: str | Path, output: str | Path | None = None,
                  fmt: str = "txt", lm_dir: str | Path | None = None, decoder: str | None = None,
                  resume: bool = True, **options):
    """``lrasr transcribe``: inputs (files, folders, manifests) -> transcripts in ``fmt`` on stdout
    (``output`` None) or in a file or folder -> (results, stats, written paths).

    With ``output``, each finished recording is saved at once in a journal beside it (see
    ``lrasr.decode.journal``); the same call after an interruption transcribes only the recordings not
    saved (``resume=False``: all of them), writes the outputs atomically and deletes the journal.
    stdout gets no journal (there is nothing to resume into). ``decoder``: greedy or beam (default: beam
    with an LM); alpha/beta default to the LM's tuned.json. ``options`` go to ``transcribe_paths``.
    """
    from contextlib import nullcontext

    from lrasr.decode.journal import journal_lock, journal_path
    from lrasr.decode.transcribe import expand_inputs, transcribe_paths

    if fmt not in FORMATS:
        raise LrasrError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    check_output(output, inputs)
    decoder = decoder or ("beam" if lm_dir is not None else "greedy")
    if decoder not in ("greedy", "beam"):
        raise LrasrError(f"--decoder {decoder}: choose greedy or beam")
    if lm_dir is not None and (options.get("alpha") is None or options.get("beta") is None):
        tuned = tuned_params(lm_dir)
        for key in ("alpha", "beta"):
            if options.get(key) is None:
                options[key] = tuned.get(key)
    paths = expand_inputs(list(inputs))
    if not paths:
        raise LrasrError("no audio files to transcribe")
    check_destination(fmt, output, len(paths))
    journal = None if output is None else journal_path(output, output_is_folder(fmt, output, len(paths)))
    # one run at a time per output, from reading the journal to deleting it
    with journal_lock(journal) if journal is not None else nullcontext():
        results, stats = transcribe_paths(paths, model_dir, lm_dir, decoder, journal=journal, resume=resume,
                                          **options)
        written = write_results(results, fmt, output)
        if journal is not None:
            journal.unlink(missing_ok=True)  # the outputs are complete: nothing left to resume
    return results, stats, written
