"""`lrasr transcribe` and `lrasr lm build|tune`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, load, user_errors

lm_app = typer.Typer(help="KenLM language models: build from text, tune alpha/beta on the dev split.",
                     no_args_is_help=True)
app.add_typer(lm_app, name="lm")


@app.command()
@user_errors
def transcribe(
    inputs: List[Path] = typer.Argument(..., help="Audio files, folders or a manifest."),
    model: Path = typer.Option(..., "--model", "-m", help="Fine-tuned model folder."),
    lm: Optional[Path] = typer.Option(None, "--lm", help="LM folder from `lrasr lm build` (beam search)."),
    format: str = typer.Option("txt", "--format", "-f",
                               help="txt, jsonl, tsv, srt or vtt. txt of one recording is just its transcript; of "
                                    "several, each transcript follows a line '==> FILE <=='. jsonl and tsv name "
                                    "the file on every row. srt/vtt hold one recording each: for several, "
                                    "--output must be a folder."),
    # a str, not a Path: a trailing "/" (a folder to create) must survive the parsing
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="Output file, or a folder (existing or ending in /; for srt/vtt of "
                                              "several recordings also a new name not ending in a format's "
                                              "extension): one subtitle file per recording, named after it, for "
                                              "srt/vtt, transcripts.<format> otherwise; default stdout. With "
                                              "--output the run can be resumed: each finished recording is saved "
                                              "at once in OUTPUT.partial.jsonl (FOLDER/transcripts.partial.jsonl), "
                                              "the same command run again after an interruption transcribes only "
                                              "the rest, and the journal is deleted when the outputs are written. "
                                              "stdout has no journal: an interrupted run starts over."),
    no_resume: bool = typer.Option(False, "--no-resume",
                                   help="Ignore the journal of an interrupted run and transcribe everything."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: cuda when available)."),
    decoder: Optional[str] = typer.Option(None, help="greedy or beam (default: beam with --lm, else greedy)."),
    beam_width: Optional[int] = typer.Option(None, min=1, help="Beam width (default 50)."),
    alpha: Optional[float] = typer.Option(None, help="LM weight (default: the LM's tuned.json, else 0.5)."),
    beta: Optional[float] = typer.Option(None, help="Word insertion bonus (default: tuned.json, else 1.0)."),
    hotword: List[str] = typer.Option([], "--hotword", help="A word or phrase to favour (repeatable)."),
    hotword_weight: Optional[float] = typer.Option(None, help="Score bonus for hotwords (default 10)."),
    chunk_seconds: Optional[float] = typer.Option(None, min=1.0, help="Longest chunk given to the model (default 20)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Beam-search processes (default: CPU count)."),
) -> None:
    """Transcribe audio of any length: greedy or KenLM beam search. With --output, a run that is
    interrupted (Ctrl-C, a crash, a reboot) goes on where it stopped when the same command is run again."""
    from lrasr.decode.output import transcribe_to
    from lrasr.report import err_console, summary_table

    results, stats, written = transcribe_to(
        inputs, model, output, format, lm, decoder, resume=not no_resume, device=device, processes=jobs,
        beam_width=beam_width, alpha=alpha, beta=beta, hotwords=list(hotword) or None,
        hotword_weight=hotword_weight, chunk_seconds=chunk_seconds)
    failed = sum(1 for r in results if r.error)
    rows = [("files", len(results))]
    if stats.resumed:
        rows += [("already transcribed (resumed)", stats.resumed), ("transcribed now", stats.files)]
    rows.append(("unreadable or silent", failed))
    if stats.files:  # all taken from the journal: nothing was timed
        rows += [("audio (min)", stats.audio_seconds / 60), ("time (s)", stats.wall_seconds),
                 ("real-time factor", stats.rtf)]
    rows.append(("decoder", (decoder or ("beam" if lm else "greedy")) + (" + LM" if lm else "")))
    if written:
        rows.append(("output", ", ".join(str(p) for p in written[:3]) + (" ..." if len(written) > 3 else "")))
    err_console.print(summary_table("transcribe", rows))
    if results and failed == len(results):  # like prepare: non-zero when nothing usable came out
        err_console.print("[bold red]error:[/] no input could be transcribed (see the warnings above)", soft_wrap=True)
        raise typer.Exit(1)


@lm_app.command("build")
@user_errors
def lm_build(
    text: List[Path] = typer.Argument(..., help="UTF-8 text files, one sentence a line, or .tsv tables with a "
                                                "text column (manifests) or Common Voice's sentence column: that "
                                                "column is read."),
    output: Path = typer.Option(..., "--output", "-o", help="LM folder to write."),
    order: Optional[int] = typer.Option(None, "--order", "-n", help="n-gram order (default: the recipe default, 3)."),
    language: Optional[str] = typer.Option(None, help="Language code: normalize the text as the acoustic data."),
    prune: Optional[List[int]] = typer.Option(
        None, "--prune", help="lmplz count threshold per order, repeated: --prune 0 --prune 0 --prune 1."),
    memory: Optional[str] = typer.Option(None, help="lmplz sorting memory, e.g. 10%, 1G (default: the recipe default, 10%)."),
) -> None:
    """Build a KenLM model (ARPA, binary trie, unigram list) from text."""
    from lrasr.decode.lm import build_lm, read_text_files
    from lrasr.recipe import LmConfig, TextConfig
    from lrasr.report import err_console, summary_table

    defaults = LmConfig()  # the recipe's lm section holds the defaults
    normalizer = None
    if language:
        from lrasr.errors import LrasrError
        from lrasr.text.normalize import LANGUAGE_SCRIPTS, Normalizer

        if language.lower() not in LANGUAGE_SCRIPTS:  # the Normalizer's own hint names a recipe key
            raise LrasrError(f"--language {language}: no text normalization known for it; use one of "
                             f"{', '.join(sorted(LANGUAGE_SCRIPTS))}, or leave --language out (no language normalization)")
        normalizer = Normalizer(language.lower(), TextConfig())
    result = build_lm(read_text_files(text), output, order=defaults.order if order is None else order,
                      prune=prune or None, memory=memory or defaults.memory, normalizer=normalizer,
                      language=language, sources=[str(t) for t in text])
    err_console.print(summary_table("lm build", list(result.summary().items())))


@lm_app.command("tune")
@user_errors
def lm_tune(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: cuda when available)."),
) -> None:
    """Grid-search alpha/beta on the dev split (acoustic model runs once); writes <workdir>/lm/tuned.json."""
    from lrasr.decode.tune import tune_recipe
    from lrasr.report import err_console, summary_table

    rec = load(recipe, workdir, check_paths=False)
    result = tune_recipe(rec, device=device)
    err_console.print(summary_table("dev split: greedy vs LM", result.table_rows(),
                                    columns=("decoder", "alpha", "beta", "WER", "CER")))
