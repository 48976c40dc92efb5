"""The recipe's `evaluate` stage: WER/CER on the evaluation split, greedy and with the tuned LM.

Writes ``<workdir>/results.json`` ({greedy, lm, dev_greedy, dev_lm}, each {wer, cer, utterances};
``lm``/``dev_*`` are null where there is no LM) and per-utterance details under
``<workdir>/evaluate/{greedy,lm}/``. The LM's alpha/beta are tuned on dev first when they never
were, or were tuned for another model, LM or dev split.
"""

from __future__ import annotations

from lrasr.errors import StageError
from lrasr.io import write_json_atomic


def run_evaluate(recipe, device: str | None = None) -> dict:
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.beam import BeamDecoder
    from lrasr.decode.transcribe import default_processes
    from lrasr.decode.tune import (beam_texts, greedy_texts, lm_dir, load_tuned, metrics, model_dir,
                                   recipe_device, recipe_segmenter, score_texts, split_logits, tune_recipe)
    from lrasr.evaluate import write_report
    from lrasr.text.normalize import recipe_normalizer

    split = recipe.evaluate.split
    manifest = recipe.workdir / "prepare" / split / "manifest.tsv"
    if not manifest.is_file():
        raise StageError(f"no {split} split to evaluate: run the prepare stage first", manifest)
    cfg = recipe.decode
    acoustic = AcousticModel(model_dir(recipe), device=recipe_device(recipe, device), batch_seconds=cfg.batch_seconds)
    normalizer = recipe_normalizer(recipe)
    out_dir = recipe.stage_dir("evaluate")
    cached = split_logits(manifest, acoustic, cfg.chunk_seconds, recipe_segmenter(recipe), f"acoustic model on {split}")
    greedy = score_texts(cached, greedy_texts(cached, acoustic.tokenizer), normalizer)
    write_report(greedy, out_dir / "greedy")
    results: dict = {"split": split, "greedy": metrics(greedy), "lm": None, "dev_greedy": None, "dev_lm": None,
                     "unreadable": cached.failed}

    lm = lm_dir(recipe)
    if (lm / "lm.bin").is_file() or (lm / "lm.arpa").is_file():
        tuned = load_tuned(recipe)
        if tuned is None:
            tuned = tune_recipe(recipe, device=device, acoustic=acoustic).to_json()
        with BeamDecoder(acoustic.tokenizer, lm, alpha=tuned["alpha"], beta=tuned["beta"],
                         beam_width=cfg.beam_width, hotwords=cfg.hotwords, hotword_weight=cfg.hotword_weight,
                         processes=default_processes()) as decoder:
            with_lm = score_texts(cached, beam_texts(cached, decoder), normalizer)
        write_report(with_lm, out_dir / "lm")
        results.update(lm={**metrics(with_lm), "alpha": tuned["alpha"], "beta": tuned["beta"]},
                       dev_greedy=tuned.get("dev_greedy"), dev_lm=tuned.get("dev_lm"))
    write_json_atomic(recipe.workdir / "results.json", results)
    write_json_atomic(out_dir / "results.json", results)
    return {k: v for k, v in results.items() if k != "unreadable"} | {"unreadable": len(cached.failed)}
