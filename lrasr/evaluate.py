"""Scoring transcripts: WER and CER after the same normalization on both sides, with reports.

Word and character error counts come from jiwer's Levenshtein alignments (``process_words`` and
``process_characters``); this module only normalizes, aggregates and writes. Characters are Unicode
code points of the normalized text with single spaces between words, so a word boundary error counts
as a character error, as in most CER definitions.

Without a language normalizer both sides are still put in Unicode NFC with collapsed whitespace:
equivalent Indic sequences (NFC vs NFD, e.g. Malayalam ൊ as one code point or as െ + ാ) must never
count as errors.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import jiwer
import pandas as pd

from lrasr.data.manifest import write_manifest
from lrasr.errors import LrasrError
from lrasr.io import write_json_atomic

# How many confusion pairs the report keeps (all are counted; the tail is rarely informative).
TOP_CONFUSIONS = 50
EMPTY = "∅"  # shown for the missing side of a deletion or insertion


class TextNormalizer(Protocol):
    def normalize(self, text: str) -> str: ...


@dataclass
class UtteranceScore:
    id: str
    speaker: str
    reference: str
    hypothesis: str
    words: int  # reference words
    word_errors: int  # substitutions + deletions + insertions
    chars: int  # reference characters (spaces between words included)
    char_errors: int


@dataclass
class SpeakerScore:
    speaker: str
    utterances: int
    words: int
    word_errors: int
    wer: float
    chars: int
    char_errors: int
    cer: float


@dataclass
class EvalReport:
    """Corpus-level scores plus the detail behind them. Rates are fractions (0.25 = 25 %)."""

    wer: float
    cer: float
    utterances: int
    words: int
    word_errors: int
    substitutions: int
    deletions: int
    insertions: int
    chars: int
    char_errors: int
    rows: list[UtteranceScore] = field(default_factory=list)
    speakers: list[SpeakerScore] = field(default_factory=list)
    # (reference char, hypothesis char, count), most frequent first; EMPTY marks the missing side
    confusions: list[tuple[str, str, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-able headline numbers (what results.json and stage summaries carry)."""
        keys = ("wer", "cer", "utterances", "words", "word_errors", "substitutions", "deletions",
                "insertions", "chars", "char_errors")
        # NaN (undefined rate) becomes null: results.json must stay strict JSON
        return {k: (None if isinstance(v := getattr(self, k), float) and v != v else v) for k in keys}


def _rate(errors: int, total: int) -> float:
    if total > 0:
        return errors / total
    # nothing to recognize: perfect when nothing was hypothesized, else undefined
    return 0.0 if errors == 0 else float("nan")


def clean(text: str, normalizer: TextNormalizer | None = None) -> str:
    """The text as scored: the language normalizer (if any), then NFC and single spaces."""
    text = "" if text is None else str(text)
    if normalizer is not None:
        text = normalizer.normalize(text)
    return " ".join(unicodedata.normalize("NFC", text).split())


def _chunk_errors(chunks: Sequence[Any]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of one jiwer alignment."""
    s = d = i = 0
    for c in chunks:
        if c.type == "substitute":
            s += c.ref_end_idx - c.ref_start_idx
        elif c.type == "delete":
            d += c.ref_end_idx - c.ref_start_idx
        elif c.type == "insert":
            i += c.hyp_end_idx - c.hyp_start_idx
    return s, d, i


def _confusions(ref: Sequence[str], hyp: Sequence[str], chunks: Sequence[Any], counter: Counter) -> None:
    for c in chunks:
        if c.type == "substitute":
            for r, h in zip(ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]):
                counter[(r, h)] += 1
        elif c.type == "delete":
            for r in ref[c.ref_start_idx:c.ref_end_idx]:
                counter[(r, EMPTY)] += 1
        elif c.type == "insert":
            for h in hyp[c.hyp_start_idx:c.hyp_end_idx]:
                counter[(EMPTY, h)] += 1


def score(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: TextNormalizer | None = None,
    ids: Sequence[str] | None = None,
    speakers: Sequence[str] | None = None,
) -> EvalReport:
    """WER/CER of ``hyps`` against ``refs`` (same length), both normalized the same way.

    ``normalizer`` is e.g. ``lrasr.text.normalize.Normalizer(language, cfg)``; ``ids`` and ``speakers``
    label the per-utterance rows and the per-speaker breakdown (default: running index, "-").
    """
    n = len(refs)
    if len(hyps) != n:
        raise LrasrError(f"{n} references but {len(hyps)} hypotheses: they must pair up one to one")
    ids = [str(i) for i in (ids if ids is not None else range(n))]
    speakers = [str(s) if s not in (None, "") else "-" for s in (speakers if speakers is not None else ["-"] * n)]
    if len(ids) != n or len(speakers) != n:
        raise LrasrError("ids and speakers must have one entry per reference")
    ref_text = [clean(r, normalizer) for r in refs]
    hyp_text = [clean(h, normalizer) for h in hyps]
    if n == 0:
        return EvalReport(float("nan"), float("nan"), 0, 0, 0, 0, 0, 0, 0, 0)

    words = jiwer.process_words(ref_text, hyp_text)
    chars = jiwer.process_characters(ref_text, hyp_text)
    rows: list[UtteranceScore] = []
    confusion: Counter = Counter()
    tot_s = tot_d = tot_i = 0
    for k in range(n):
        s, d, i = _chunk_errors(words.alignments[k])
        tot_s, tot_d, tot_i = tot_s + s, tot_d + d, tot_i + i
        cs, cd, ci = _chunk_errors(chars.alignments[k])
        _confusions(chars.references[k], chars.hypotheses[k], chars.alignments[k], confusion)
        rows.append(UtteranceScore(ids[k], speakers[k], ref_text[k], hyp_text[k], len(words.references[k]),
                                   s + d + i, len(chars.references[k]), cs + cd + ci))

    per_speaker: dict[str, list[UtteranceScore]] = {}
    for row in rows:
        per_speaker.setdefault(row.speaker, []).append(row)
    speaker_scores = []
    for spk, items in sorted(per_speaker.items()):
        w, we = sum(r.words for r in items), sum(r.word_errors for r in items)
        c, ce = sum(r.chars for r in items), sum(r.char_errors for r in items)
        speaker_scores.append(SpeakerScore(spk, len(items), w, we, _rate(we, w), c, ce, _rate(ce, c)))

    total_words = sum(r.words for r in rows)
    total_chars = sum(r.chars for r in rows)
    word_errors = tot_s + tot_d + tot_i
    char_errors = sum(r.char_errors for r in rows)
    top = sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONFUSIONS]
    return EvalReport(
        wer=_rate(word_errors, total_words), cer=_rate(char_errors, total_chars), utterances=n,
        words=total_words, word_errors=word_errors, substitutions=tot_s, deletions=tot_d, insertions=tot_i,
        chars=total_chars, char_errors=char_errors, rows=rows, speakers=speaker_scores,
        confusions=[(r, h, c) for (r, h), c in top],
    )


def _char_name(ch: str) -> str:
    if ch == EMPTY:
        return "(none)"
    if ch == " ":
        return "SPACE"
    return unicodedata.name(ch, f"U+{ord(ch):04X}")


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, ``utterances.tsv``, ``speakers.tsv`` and ``confusions.tsv`` atomically.

    Returns the written paths by name. TSVs read back with ``lrasr.data.manifest.read_manifest``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.tsv" for name in ("utterances", "speakers", "confusions")}
    paths["summary"] = out / "summary.json"
    utt_cols = ("id", "speaker", "reference", "hypothesis", "word_errors", "char_errors", "words", "chars")
    spk_cols = tuple(SpeakerScore.__dataclass_fields__)
    conf_cols = ("reference", "hypothesis", "count", "reference_name", "hypothesis_name")
    # explicit columns so that an empty report still writes a header row
    write_manifest(pd.DataFrame([{k: getattr(r, k) for k in utt_cols} for r in report.rows], columns=utt_cols),
                   paths["utterances"], standard=utt_cols)
    write_manifest(pd.DataFrame([asdict(s) for s in report.speakers], columns=spk_cols), paths["speakers"],
                   standard=spk_cols)
    write_manifest(pd.DataFrame([(r, h, c, _char_name(r), _char_name(h)) for r, h, c in report.confusions],
                                columns=conf_cols), paths["confusions"], standard=conf_cols)
    summary = report.summary()
    summary["worst_speakers"] = [
        {"speaker": s.speaker, "wer": s.wer, "cer": s.cer, "utterances": s.utterances}
        for s in sorted(report.speakers, key=lambda s: -(s.cer if s.cer == s.cer else 0.0))[:10]
    ]
    summary["top_confusions"] = [[r, h, c] for r, h, c in report.confusions[:10]]
    write_json_atomic(paths["summary"], summary)
    return paths


# ------------------------------------------------------------------------- a model on a manifest
def forward_batches(model: Any, waves: Sequence[Any], device: Any = "cpu", batch_seconds: float = 60.0,
                    sample_rate: int = 16000):
    """Run a CTC model over ``waves`` (1-D float32 arrays) in length-sorted, padded batches.

    Yields ``(indices, logits [B, F, V] float32 on the CPU, frames [B])`` with at most
    ``batch_seconds`` of padded audio per batch; ``indices`` point into ``waves``. The model must
    already be in eval mode on ``device``; on CUDA it runs under ``lrasr.decode.acoustic.run_model``'s
    autocast (bf16, or fp16 with a float32 rerun on overflow where bf16 is not native).
    """
    import numpy as np
    import torch

    from lrasr.decode.acoustic import run_model

    device = torch.device(device)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * len(waves[i]) <= batch_seconds * sample_rate:
            batches[-1].append(i)
        else:
            batches.append([i])
    for idx in batches:
        longest = max(len(waves[i]) for i in idx)
        x = torch.zeros(len(idx), max(longest, 400), dtype=torch.float32)
        for row, i in enumerate(idx):
            x[row, : len(waves[i])] = torch.from_numpy(np.asarray(waves[i], dtype=np.float32))
        lengths = torch.tensor([max(len(waves[i]), 400) for i in idx], dtype=torch.int64)
        with torch.no_grad():  # lengths stay on the CPU, where the model's frame bookkeeping is
            logits, frames = run_model(model, x.to(device), lengths, device)
        yield idx, logits.float().cpu(), frames.cpu()


def evaluate_model(model_dir: str | Path, manifest: str | Path, out_dir: str | Path | None = None,
                   device: str | None = None, language: str | None = None, batch_seconds: float | None = None,
                   chunk_seconds: float | None = None, vad_cfg: Any = None) -> EvalReport:
    """Greedy WER/CER of a fine-tuned model folder on a labeled manifest (``lrasr evaluate``).

    Audio goes through the same chunked acoustic pass as the recipe's evaluate stage
    (``lrasr.decode.tune.split_logits``): a row longer than ``chunk_seconds`` (default: the recipe
    default ``decode.chunk_seconds``) is read block by block and cut at VAD silences (``vad_cfg``,
    default ``prepare.vad`` defaults), so a long recording never reaches the model whole.
    References and hypotheses are normalized by the language's ``Normalizer`` (the language and text
    settings saved beside the model by ``lrasr finetune``, or ``language``). Unreadable audio is
    listed in the report's summary (``unreadable``) and scored as an empty hypothesis, as the recipe's
    evaluate stage scores it.
    """
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.chunking import vad_segmenter
    from lrasr.decode.tune import greedy_texts, score_texts, split_logits
    from lrasr.recipe import DecodeConfig, VadConfig

    model_dir, manifest = Path(model_dir), Path(manifest)
    defaults = DecodeConfig()
    chunk_seconds = float(chunk_seconds or defaults.chunk_seconds)
    acoustic = AcousticModel(model_dir, device=device, batch_seconds=batch_seconds or defaults.batch_seconds)
    cached = split_logits(manifest, acoustic, chunk_seconds, vad_segmenter(vad_cfg or VadConfig(), chunk_seconds),
                          f"acoustic model on {manifest.name}")
    hyps = greedy_texts(cached, acoustic.tokenizer)
    failed = set(cached.failed)
    unreadable = [f"{utt}: {_unreadable_reason(path)}" for utt, path in zip(cached.ids, _manifest_paths(manifest))
                  if utt in failed] if failed else []
    # unreadable rows score as empty hypotheses (all deletions), as in the recipe's evaluate stage, so
    # both report the same WER for the same model and manifest
    report = score_texts(cached, hyps, normalizer_for(model_dir, language))
    if out_dir is not None:
        paths = write_report(report, out_dir)
        if unreadable:
            summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
            summary["unreadable"] = unreadable
            write_json_atomic(paths["summary"], summary)
    report.unreadable = unreadable  # type: ignore[attr-defined]
    return report


def _manifest_paths(manifest: Path) -> list[Path]:
    """The audio paths of a manifest's rows, in order (as ``split_logits`` read them)."""
    from lrasr.data.manifest import audio_paths, read_labeled_manifest

    return audio_paths(read_labeled_manifest(manifest), manifest)


def _unreadable_reason(path: Path) -> str:
    """Why ``path`` could not be read, for the report (``split_logits`` only warned)."""
    from lrasr.audio.decode import AudioError, probe

    try:
        probe(path)
    except AudioError as exc:
        return str(exc)
    return f"{path}: could not be decoded"


TEXT_FILE = "text.json"  # language + prepare.text settings saved beside a fine-tuned model


def normalizer_for(model_dir: str | Path | None, language: str | None = None) -> TextNormalizer | None:
    """The language normalizer a model was trained with (``text.json``), or for ``language``."""
    from lrasr.recipe import TextConfig
    from lrasr.text.normalize import Normalizer

    cfg = TextConfig()
    info_path = Path(model_dir) / TEXT_FILE if model_dir is not None else None
    if info_path is not None and info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        language = language or info.get("language")
        cfg = TextConfig.model_validate(info.get("text") or {})
    if not language:
        return None  # still NFC + whitespace (see ``clean``)
    return Normalizer(language, cfg)
