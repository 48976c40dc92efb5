"""`lrasr finetune`, `lrasr evaluate`, `lrasr export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lrasr.cli.app import (DeviceOpt, RecipeArg, ResumeOpt, WorkdirOpt, app, load, max_steps_option,
                           run_training_stage, user_errors)


@app.command()
@user_errors
def finetune(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    device: Optional[str] = DeviceOpt,
    resume: bool = ResumeOpt,
    max_steps: Optional[int] = max_steps_option("finetune"),
) -> None:
    """CTC fine-tuning on the labeled train split, with dev WER/CER (torchrun for multi-GPU)."""
    from lrasr.report import console, summary_table
    from lrasr.stages.finetune import run_finetune
    from lrasr.train.distributed import env_info

    summary = run_training_stage("finetune", run_finetune, load(recipe, workdir), device, resume, max_steps)
    if not env_info().is_main:
        return
    rows = [(k, v if not isinstance(v, dict) else ", ".join(f"{a}: {b}" for a, b in v.items()) or "-")
            for k, v in summary.items()]
    console.print(summary_table("finetune", rows))


@app.command()
@user_errors
def evaluate(
    manifest: Path = typer.Argument(..., help="Labeled manifest: a prepared split (TSV with id, audio, "
                                              "text[, speaker]) or your own labeled TSV with path and text."),
    model: Path = typer.Option(..., "--model", "-m", help="Fine-tuned model folder (finetune/model)."),
    out: Optional[Path] = typer.Option(None, "--output", "--out", "-o",
                                       help="Report folder (default: eval/<manifest folder> beside the model)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: auto)."),
    language: Optional[str] = typer.Option(None, help="Language for text normalization (default: the model's)."),
    chunk_seconds: Optional[float] = typer.Option(
        None, "--chunk-seconds", min=1.0,
        help="Rows longer than this are cut at VAD silences into chunks this long (default: decode.chunk_seconds)."),
) -> None:
    """Greedy WER/CER of a model on a manifest: per-utterance and per-speaker TSVs, character confusions."""
    from lrasr.evaluate import evaluate_model
    from lrasr.report import console, summary_table

    out = out or model.resolve().parent / "eval" / manifest.resolve().parent.name
    extra = {"chunk_seconds": chunk_seconds} if chunk_seconds is not None else {}
    report = evaluate_model(model, manifest, out, device=device, language=language, **extra)
    rows = [("utterances", report.utterances), ("WER %", 100 * report.wer), ("CER %", 100 * report.cer),
            ("substitutions / deletions / insertions",
             f"{report.substitutions} / {report.deletions} / {report.insertions}"),
            ("unreadable audio", len(getattr(report, "unreadable", []))), ("report", str(out))]
    console.print(summary_table(f"evaluate {manifest}", rows))
    if report.confusions:
        console.print(summary_table("most frequent character confusions",
                                    [(f"{_show(r)} -> {_show(h)}", n) for r, h, n in report.confusions[:10]],
                                    ("reference -> hypothesis", "count")))


@app.command()
@user_errors
def export(
    model_dir: Path = typer.Argument(..., help="Fine-tuned lrasr model folder."),
    out_dir: Path = typer.Argument(..., help="Folder to write (new, empty, or an earlier export, which is replaced)."),
    format: str = typer.Option("hf", "--format", help="Target format: hf (transformers Wav2Vec2ForCTC)."),
) -> None:
    """Export a model for other toolkits (transformers' Wav2Vec2ForCTC + Wav2Vec2Processor)."""
    from lrasr.convert import export_hf
    from lrasr.errors import LrasrError
    from lrasr.report import console, summary_table

    if format != "hf":
        raise LrasrError(f"unknown export format {format!r}; supported: hf")
    summary = export_hf(model_dir, out_dir)
    console.print(summary_table("export", list(summary.items())))


def _show(ch: str) -> str:
    """A visible stand-in for a space; combining marks get a dotted circle to sit on."""
    import unicodedata

    if ch == " ":
        return "␠"
    return f"◌{ch}" if unicodedata.category(ch).startswith("M") else ch
