"""`lrasr run` (every stage of a recipe, skipping what is up to date) and `lrasr corpora list/show`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lrasr.cli.app import RecipeArg, WorkdirOpt, app, load, user_errors
from lrasr.report import console, err_console, summary_table


@app.command()
@user_errors
def run(
    recipe: Path = RecipeArg,
    workdir: Optional[Path] = WorkdirOpt,
    from_stage: Optional[str] = typer.Option(
        None, "--from", help="Start at this stage (prepare, pretrain, finetune, lm, evaluate); earlier stages "
        "must have completed before. Up-to-date stages in the range are still skipped (see --force)."),
    to_stage: Optional[str] = typer.Option(None, "--to", help="Stop after this stage."),
    force: List[str] = typer.Option(
        [], "--force", help="Rerun this stage even when it is up to date (repeatable; 'all' for every "
        "stage). Stages downstream of it rerun too. The stage must lie within --from/--to."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would run and what is cached; run nothing."),
    device: Optional[str] = typer.Option(None, "--device", help="Device for training and decoding "
                                         "(cpu, cuda, cuda:1); default: the recipe's, else CUDA when present."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Parallel processes for prepare."),
) -> None:
    """Run a recipe's stages in order: prepare, pretrain, finetune, lm, evaluate.

    A completed stage is stamped with a fingerprint of its inputs (recipe settings, upstream stages,
    input file contents, lrasr version). A rerun skips unchanged stages; a changed setting reruns that
    stage and everything after it. The run is recorded in <workdir>/run.json and ends with the results
    table from <workdir>/results.json.
    """
    from lrasr.runner import StageNotImplemented, make_plan, run_recipe

    rec = load(recipe, workdir=workdir)
    if dry_run:
        plans = make_plan(rec, from_stage, to_stage, force)
        labels = {"run": "[bold]run[/]", "skip": "cached", "before-range": "not in range",
                  "after-range": "not in range"}
        table = summary_table(f"plan for {recipe} (workdir {rec.workdir})",
                              [(p.stage, labels[p.action], p.reason) for p in plans], ("stage", "action", "why"))
        console.print(table)
        return
    try:
        outcome = run_recipe(rec, from_stage, to_stage, force, device=device, jobs=jobs, echo=console.print)
    except StageNotImplemented as exc:
        err_console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        # no stamp was written for the interrupted stage: the next run resumes or redoes it
        err_console.print("[yellow]interrupted: run the same command again to resume[/]")
        raise typer.Exit(130) from None
    took = sum(outcome.seconds.values())
    console.print(f"ran {', '.join(outcome.ran) or 'nothing'}"
                  + (f" in {took:.1f} s" if outcome.ran else "")
                  + (f"; up to date: {', '.join(outcome.skipped)}" if outcome.skipped else "")
                  + f"; record: {rec.workdir / 'run.json'}")


corpora_app = typer.Typer(help="Corpus cards: where to get public speech corpora and how lrasr reads them.",
                          no_args_is_help=True)
app.add_typer(corpora_app, name="corpora")


@corpora_app.command("list")
@user_errors
def corpora_list(
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Only cards covering this language code."),
) -> None:
    """List the corpus cards (corpora/<name>.yaml)."""
    from lrasr.corpora import list_cards

    rows = []
    for card in list_cards():
        if language and language.lower() not in card.languages and "many" not in card.languages:
            continue
        langs = ", ".join(card.languages[:6]) + (f" +{len(card.languages) - 6}" if len(card.languages) > 6 else "")
        title = card.title if len(card.title) <= 48 else card.title[:47] + "…"
        rows.append((card.name, title, langs, card.licence.split(" (")[0], card.ingest.format))
    console.print(summary_table("corpus cards (details: lrasr corpora show NAME)", rows,
                                ("name", "corpus", "languages", "licence", "format")))


@corpora_app.command("show")
@user_errors
def corpora_show(name: str = typer.Argument(..., help="Card name, as in `lrasr corpora list`.")) -> None:
    """Show one corpus card: source, licence, size, languages, expected layout, recipe snippet."""
    from lrasr.corpora import load_card, render_card

    console.print(render_card(load_card(name)), soft_wrap=True)
