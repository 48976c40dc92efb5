"""`lrasr export-manifest`: prepared splits to fairseq or NeMo layouts."""

from __future__ import annotations

from pathlib import Path

import typer

from lrasr.cli.app import app, user_errors
from lrasr.report import console, summary_table


@app.command("export-manifest")
@user_errors
def export_manifest(
    prepare_dir: Path = typer.Argument(..., help="A prepare folder with train/, dev/, test/ manifests "
                                       "(<workdir>/prepare)."),
    format: str = typer.Option(..., "--format", "-f", help="fairseq (.tsv/.wrd/.ltr/dict.ltr.txt) or nemo (JSON lines)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the exported manifests into."),
) -> None:
    """Export prepared train/dev/test manifests for fairseq or NeMo."""
    from lrasr.data.export import export_manifests

    summary = export_manifests(prepare_dir, format.lower(), output)
    console.print(summary_table("export-manifest", list(summary.items())))
