"""Scoring a manifest split with cached log-probabilities, and `lrasr lm tune` (alpha/beta grid search).

The acoustic model runs once per split; every decoder setting is then tried on the cached
log-probabilities, so a grid of 24 settings costs 24 beam searches, not 24 forward passes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrasr.audio.decode import AudioError
from lrasr.decode.chunking import iter_chunks
from lrasr.decode.greedy import greedy_hypothesis
from lrasr.decode.types import Hypothesis, merge_hypotheses
from lrasr.errors import StageError
from lrasr.io import write_json_atomic
from lrasr.report import progress, warn
from lrasr.text.normalize import recipe_normalizer


def model_dir(recipe) -> Path:
    """The fine-tuned model folder the finetune stage writes."""
    return recipe.workdir / "finetune" / "model"


def lm_dir(recipe) -> Path:
    return recipe.stage_dir("lm")


def recipe_device(recipe, device: str | None) -> str | None:
    """The device to run the recipe's model on: ``device`` when given (--device), else the one the
    recipe trains it on (``finetune.device``), so evaluation and tuning follow a recipe that says cpu."""
    if device is not None or recipe.finetune is None:
        return device
    return recipe.finetune.device


@dataclass
class SplitLogits:
    """A manifest split after one acoustic pass: per utterance, its chunks' (start s, log-probs [F, V])."""

    ids: list[str]
    refs: list[str]
    speakers: list[str]
    chunks: list[list[tuple[float, np.ndarray]]]
    failed: list[str] = field(default_factory=list)

    def flat(self) -> list[np.ndarray]:
        return [lp for utt in self.chunks for _, lp in utt]

    def merge(self, hyps: list[Hypothesis]) -> list[str]:
        """Chunk hypotheses in ``flat()`` order -> one text per utterance."""
        out, k = [], 0
        for utt in self.chunks:
            parts = [hyps[k + j].shifted(start) for j, (start, _) in enumerate(utt)]
            k += len(utt)
            out.append(merge_hypotheses(parts).text)
        return out


def split_logits(manifest: Path, acoustic, chunk_seconds: float, segmenter=None, label: str = "") -> SplitLogits:
    """Run ``acoustic`` over every utterance of ``manifest`` (long ones chunked); unreadable audio is
    warned about and scored as an empty hypothesis."""
    from lrasr.data.manifest import audio_paths, read_labeled_manifest

    frame = read_labeled_manifest(manifest)
    if len(frame) == 0:
        raise StageError("the split has no utterances", manifest)
    paths = audio_paths(frame, manifest)
    speakers = list(frame["speaker"].astype(str)) if "speaker" in frame.columns else [""] * len(frame)
    result = SplitLogits(list(frame["id"].astype(str)), list(frame["text"].astype(str)), speakers,
                         [[] for _ in range(len(frame))])
    window: list[tuple[int, float, np.ndarray]] = []
    budget = acoustic.batch_seconds * 16_000

    def flush() -> None:
        for (i, start, _), lp in zip(window, acoustic.log_probs([w for _, _, w in window])):
            result.chunks[i].append((start, lp))
        window.clear()

    with progress() as bar:
        task = bar.add_task(label or f"acoustic model on {manifest.parent.name}", total=len(paths), info="")
        for i, path in enumerate(paths):
            try:
                for chunk in iter_chunks(path, chunk_seconds, segmenter):
                    window.append((i, chunk.start, chunk.wave))
            except AudioError as exc:
                warn(f"{exc}; scored as an empty transcript")
                result.failed.append(result.ids[i])
            if sum(len(w) for _, _, w in window) >= budget:
                flush()
            bar.update(task, advance=1)
        flush()
    return result


def greedy_texts(cached: SplitLogits, tokenizer) -> list[str]:
    return cached.merge([greedy_hypothesis(lp, tokenizer) for lp in cached.flat()])


def beam_texts(cached: SplitLogits, decoder, alpha: float | None = None, beta: float | None = None) -> list[str]:
    return cached.merge(decoder.decode_batch(cached.flat(), alpha=alpha, beta=beta))


def score_texts(cached: SplitLogits, hyps: list[str], normalizer=None):
    from lrasr.evaluate import score

    return score(cached.refs, hyps, normalizer=normalizer, ids=cached.ids, speakers=cached.speakers)


def metrics(report) -> dict:
    return {"wer": float(report.wer), "cer": float(report.cer), "utterances": int(report.utterances)}


@dataclass
class TuneResult:
    alpha: float
    beta: float
    dev_greedy: dict
    dev_lm: dict
    grid: list[dict]

    inputs: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "dev_greedy": self.dev_greedy, "dev_lm": self.dev_lm,
                "grid": self.grid, "inputs": self.inputs}

    def table_rows(self) -> list[tuple]:
        rows = [("greedy", None, None, self.dev_greedy["wer"], self.dev_greedy["cer"])]
        rows.append(("beam + LM (best)", self.alpha, self.beta, self.dev_lm["wer"], self.dev_lm["cer"]))
        worst = max(self.grid, key=lambda g: (g["wer"], g["cer"]))
        rows.append(("beam + LM (worst of grid)", worst["alpha"], worst["beta"], worst["wer"], worst["cer"]))
        return rows


def tune(cached: SplitLogits, tokenizer, decoder, alphas, betas, normalizer=None) -> TuneResult:
    """Grid search over ``alphas`` x ``betas`` on cached log-probs; best = lowest WER, then CER."""
    greedy = metrics(score_texts(cached, greedy_texts(cached, tokenizer), normalizer))
    grid = []
    with progress() as bar:
        task = bar.add_task("alpha/beta grid", total=len(alphas) * len(betas), info="")
        for a, b in itertools.product(alphas, betas):
            m = metrics(score_texts(cached, beam_texts(cached, decoder, float(a), float(b)), normalizer))
            grid.append({"alpha": float(a), "beta": float(b), **m})
            bar.update(task, advance=1, info=f"WER {m['wer']:.3f}")
    best = min(grid, key=lambda g: (g["wer"], g["cer"], abs(g["alpha"]) + abs(g["beta"])))
    dev_lm = {k: best[k] for k in ("wer", "cer", "utterances")}
    return TuneResult(best["alpha"], best["beta"], greedy, dev_lm, grid)


def tune_recipe(recipe, device: str | None = None, acoustic=None) -> TuneResult:
    """`lrasr lm tune`: grid-search alpha/beta on ``<workdir>/prepare/dev`` with ``<workdir>/lm``;
    writes ``<workdir>/lm/tuned.json``."""
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.beam import BeamDecoder
    from lrasr.decode.transcribe import default_processes

    lm = lm_dir(recipe)
    if not (lm / "lm.bin").is_file() and not (lm / "lm.arpa").is_file():
        raise StageError("no LM to tune: run the lm stage first (`lrasr run RECIPE --to lm`)", lm)
    dev = recipe.workdir / "prepare" / "dev" / "manifest.tsv"
    if not dev.is_file():
        raise StageError("no dev split to tune on: run the prepare stage first", dev)
    cfg = recipe.decode
    if acoustic is None:
        acoustic = AcousticModel(model_dir(recipe), device=recipe_device(recipe, device),
                                 batch_seconds=cfg.batch_seconds)
    cached = split_logits(dev, acoustic, cfg.chunk_seconds, recipe_segmenter(recipe), "acoustic model on dev")
    with BeamDecoder(acoustic.tokenizer, lm, alpha=cfg.alpha, beta=cfg.beta, beam_width=cfg.beam_width,
                     processes=default_processes()) as decoder:
        result = tune(cached, acoustic.tokenizer, decoder, cfg.tune_alpha, cfg.tune_beta, recipe_normalizer(recipe))
    result.inputs = tuning_inputs(recipe)
    write_json_atomic(lm / "tuned.json", result.to_json())
    return result


def tuning_inputs(recipe) -> dict:
    """What tuned weights depend on: model weights, LM (binary or ARPA) and dev split (size and
    modification time), and the search itself (grid, beam width)."""
    out = {}
    for name, path in (("model", model_dir(recipe) / "model.safetensors"), ("lm", lm_dir(recipe) / "lm.bin"),
                       ("arpa", lm_dir(recipe) / "lm.arpa"),
                       ("dev", recipe.workdir / "prepare" / "dev" / "manifest.tsv")):
        if path.is_file():
            st = path.stat()
            out[name] = f"{st.st_size}:{st.st_mtime_ns}"
    cfg = recipe.decode
    out["search"] = f"alpha={list(cfg.tune_alpha)} beta={list(cfg.tune_beta)} beam={cfg.beam_width}"
    return out


def load_tuned(recipe) -> dict | None:
    """``<workdir>/lm/tuned.json`` when it was tuned for the current model, LM and dev split, else None."""
    import json

    path = lm_dir(recipe) / "tuned.json"
    if not path.is_file():
        return None
    try:
        tuned = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        warn(f"{path}: not valid JSON; tuning again")
        return None
    if tuned.get("inputs") != tuning_inputs(recipe):
        warn(f"{path}: tuned for another model, LM, dev split or search grid; tuning again")
        return None
    return tuned


def recipe_segmenter(recipe):
    """The VAD chunker for a recipe's long utterances (the prepare stage's VAD settings)."""
    from lrasr.decode.chunking import vad_segmenter

    return vad_segmenter(recipe.prepare.vad, recipe.decode.chunk_seconds)
