"""`lrasr prepare`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, load, user_errors


@app.command()
@user_errors
def prepare(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1,
                                       help="Worker processes (default: recipe prepare.jobs)."),
    shard: Optional[str] = typer.Option(
        None, help="I/N: segment only every N-th unlabeled input starting at I (0-based), writing "
        "prepare/unlabeled/shards/I-of-N/; run once per shard (e.g. cluster array jobs), then --merge."),
    merge: bool = typer.Option(False, "--merge", help="Join the shards' results into the final manifests "
                               "without processing inputs (a plain run without --shard also does this)."),
    strict: bool = typer.Option(False, help="Exit non-zero when any input or segment is rejected."),
) -> None:
    """Segment raw recordings (VAD + quality filters) and ingest labeled corpora into manifests.

    Reruns skip inputs already done with the same content and settings; an interrupted run resumes.
    Exits non-zero only when nothing usable was produced (or with --strict).
    """
    from lrasr.errors import LrasrError
    from lrasr.stage_command import stage_command
    from lrasr.stages.prepare import parse_shard, run_prepare

    if shard is not None and merge:
        raise LrasrError("--shard and --merge exclude each other: run the shards first, then --merge")
    shard_t = parse_shard(shard)  # a bad value fails before the recipe is even loaded
    loaded = load(recipe, workdir)
    with stage_command(loaded, "prepare", complete=shard_t is None) as record:  # `lrasr run` then skips it
        record["summary"] = run_prepare(loaded, jobs=jobs, shard=shard_t, strict=strict, merge=merge)
