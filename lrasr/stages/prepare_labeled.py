"""Labeled half of `prepare`: ingest corpora, normalize text, check audio, split, train the tokenizer.

Writes ``<workdir>/prepare/{train,dev,test}/manifest.tsv`` (id, audio relative to the manifest folder,
duration, text, raw_text, speaker, source, line, and gender where known), ``<workdir>/prepare/tokenizer/``
and, with ``prepare.labeled_audio: flac`` or segmented corpora, ``<workdir>/prepare/labeled_audio/``.
Returns a JSON-able summary and the rejected rows; ``run_prepare`` merges those into rejected.tsv.
Every input row is either kept or rejected with a reason: the summary's ``input_rows`` equals
``utterances + rejected``.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from lrasr.audio.codec_reader import FFMPEG_COMMAND_EXTENSIONS
from lrasr.data.ingest import Item, ingest_corpus, read_lines
from lrasr.data.ingest_audio import check_all, flac_name, make_job
from lrasr.data.manifest import RejectLog, relative_audio, write_manifest
from lrasr.data.splits import SPLITS, SplitInput, assign_splits, split_stats, split_warnings
from lrasr.report import histograms_png, progress, warn
from lrasr.text.normalize import Normalizer, describe_char
from lrasr.text.tokenizer import train_tokenizer

TOP_CHARS = 20
WHITELIST_REASON = "characters outside whitelist"
TEXT_CORPUS_MAX_LINES = 2_000_000  # enough for a tokenizer; sentencepiece would sample anyway
COLUMNS = ["id", "audio", "duration", "text", "raw_text", "speaker", "source", "line", "gender"]


def _unique(items: list[Item], rejects: RejectLog) -> list[Item]:
    seen: dict[str, str] = {}
    out = []
    for it in items:
        where = f"{it.source}:{it.line}" if it.line else it.source
        if it.id in seen:
            rejects.add(it.source, f"duplicate id: {it.id} already at {seen[it.id]}", line=it.line, id=it.id)
            continue
        seen[it.id] = where
        out.append(it)
    return out


def _normalize(items: list[Item], normalizer: Normalizer, rejects: RejectLog,
               bad_chars: Counter[str]) -> list[tuple[Item, str]]:
    out = []
    for it in items:
        if not it.text.strip():
            rejects.add(it.source, "empty text", line=it.line, id=it.id)
            continue
        norm, bad = normalizer.check(it.text)
        if bad:
            bad_chars.update(ch for ch in norm if ch in bad)
            named = ", ".join(describe_char(ch) for ch in sorted(bad))
            rejects.add(it.source, f"{WHITELIST_REASON}: {named}", line=it.line, id=it.id)
        elif not norm:
            rejects.add(it.source, "empty text after normalization", line=it.line, id=it.id)
        else:
            out.append((it, norm))
    return out


def _whitelist_advice(bad_chars: Counter[str], rejected: int, total: int, normalizer: Normalizer) -> str | None:
    """What to do about utterances rejected for characters outside the script: numbers and English words
    in Latin letters are the usual cause in Indian-language transcripts, and each has its own remedy."""
    if not rejected:
        return None
    digits = [ch for ch in bad_chars if unicodedata.category(ch) == "Nd"]
    latin = [ch for ch in bad_chars if ch.isascii() and ch.isalpha()]
    other = [ch for ch, _ in bad_chars.most_common() if ch not in digits and ch not in latin]
    advice = []
    if digits:
        advice.append("digits: write numbers as words as spoken, or set prepare.text.digits: keep (digits become "
                      "labels; drop deletes them, leaving the spoken number out of the transcript)")
    if latin:
        advice.append("Latin letters (English words): write them in the script, or add them to prepare.text.extra_chars")
    if other:
        advice.append(f"{', '.join(describe_char(ch) for ch in other[:5])}: add to prepare.text.extra_chars what "
                      "the language really uses")
    return (f"{rejected} of {total} utterances ({rejected / max(total, 1):.0%}) rejected for characters outside the "
            f"{normalizer.script.name} whitelist; " + "; ".join(advice))


def _missing_audio_advice(texted: list[tuple[Item, str]], rows: list[dict[str, object]]) -> str | None:
    """When most audio the corpora name is missing, the paths usually start from another folder than the
    table's (where relative paths are read from): one line saying so, not only a row per file."""
    missing = [r for r in rows if str(r["reason"]).startswith("missing audio: ")]
    if not texted or len(missing) * 2 < len(texted):
        return None
    first = str(missing[0]["reason"]).removeprefix("missing audio: ").removesuffix(" not found")
    return (f"{len(missing)} of {len(texted)} audio files not found (first: {first}): relative audio paths are "
            f"read from the folder of the table naming them ({Path(str(missing[0]['source'])).parent}); write "
            "absolute paths or keep the table where the paths start")


def _check_audio(recipe, texted: list[tuple[Item, str]], jobs: int, rejects: RejectLog) -> list[dict[str, Any]]:
    flac_dir = recipe.workdir / "prepare" / "labeled_audio"
    to_flac = recipe.prepare.labeled_audio == "flac"
    # formats only the ffmpeg command decodes in full (WMA, Opus in CAF) are decoded once here: read in
    # place, every epoch would start an ffmpeg process per clip (~40x torchcodec's time)
    work = [make_job(it.audio, it.start, it.end, it.duration, it.samples,
                     flac_dir / flac_name(it.id, it.audio, it.start, it.end),
                     to_flac or Path(it.audio).suffix.lower() in FFMPEG_COMMAND_EXTENSIONS, recipe.prepare.filters)
            for it, _ in texted]
    kept = []
    with progress() as bar:
        task = bar.add_task("labeled audio", total=len(work), info="")
        for (it, norm), res in zip(texted, check_all(work, jobs)):
            bar.advance(task)
            if not res.ok:
                rejects.add(it.source, res.reason, line=it.line, id=it.id)
                continue
            kept.append({"id": it.id, "audio_path": res.audio, "duration": round(res.duration, 3), "text": norm,
                         "raw_text": it.text, "speaker": it.speaker or "", "source": it.source,
                         "line": it.line, "gender": it.gender or "", "split": it.split})
    return kept


def _text_corpus_lines(recipe, normalizer: Normalizer) -> tuple[list[str], int]:
    """Normalized lines of the recipe's text corpora for tokenizer training, and how many were skipped
    (characters outside the whitelist, undecodable or empty after normalization)."""
    lines: list[str] = []
    skipped = 0
    for corpus in recipe.corpora.text:
        files = sorted(corpus.path.rglob("*.txt")) if corpus.path.is_dir() else [corpus.path]
        for path in files:
            bad_lines = RejectLog()
            for _, text in read_lines(path, bad_lines):
                norm, bad = normalizer.check(text)
                if norm and not bad:
                    lines.append(norm)
                else:
                    skipped += 1
                if len(lines) >= TEXT_CORPUS_MAX_LINES:
                    return lines, skipped + len(bad_lines)
            skipped += len(bad_lines)
    return lines, skipped


def _manifest_audio(audio: Path, folder: Path, workdir: Path) -> str:
    """Relative to the manifest folder for files inside the workdir (they move with it); absolute for
    corpora referenced in place, so a long ``../../..`` chain does not break when the workdir moves."""
    try:
        audio.resolve().relative_to(workdir.resolve())
    except ValueError:
        return str(audio.resolve())
    return relative_audio(audio, folder)


def _write_manifests(out: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    for split in SPLITS:
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for r in rows.get(split, []):
            rec = {k: r[k] for k in COLUMNS if k != "audio"}
            rec["audio"] = _manifest_audio(Path(r["audio_path"]), folder, out.parent)
            records.append(rec)
        frame = pd.DataFrame(records, columns=COLUMNS)
        if not frame["gender"].astype(str).str.len().any():
            frame = frame.drop(columns=["gender"])  # no corpus said: leave the column out
        write_manifest(frame, folder / "manifest.tsv")


def prepare_labeled(recipe, jobs: int = 1) -> tuple[dict[str, Any], RejectLog]:
    """Ingest every ``corpora.labeled`` entry into split manifests and a tokenizer (see module doc)."""
    out = recipe.workdir / "prepare"
    out.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog()
    items: list[Item] = []
    for corpus in recipe.corpora.labeled:
        found, bad = ingest_corpus(corpus, audio_dir=out / "labeled_audio", jobs=max(1, int(jobs or 1)))  # parquet
        items.extend(found)
        rejects.rows.extend(bad.rows)
    input_rows = len(items) + len(rejects)
    normalizer = Normalizer(recipe.language, recipe.prepare.text)
    bad_chars: Counter[str] = Counter()
    unique = _unique(items, rejects)
    texted = _normalize(unique, normalizer, rejects, bad_chars)
    advice = _whitelist_advice(bad_chars, rejects.counts().get(WHITELIST_REASON, 0), len(unique), normalizer)
    before = len(rejects)
    kept = _check_audio(recipe, texted, max(1, int(jobs or 1)), rejects)
    advice = [a for a in (advice, _missing_audio_advice(texted, rejects.rows[before:])) if a]

    no_speaker = sum(1 for r in kept if not r["speaker"] and not r["split"])
    if no_speaker and recipe.prepare.split.by == "speaker":
        # a speaker column under another name is easy to miss: the split would then only look speaker-disjoint
        warn(f"{no_speaker} of {len(kept)} utterances have no speaker, so each is its own group in the "
             "speaker-disjoint split; name the corpus's speaker column (speaker_column, Kaldi utt2spk) if it has one")
    placed, left_out = assign_splits(
        [SplitInput(r["id"], r["duration"], r["speaker"] or None, r["split"]) for r in kept],
        recipe.prepare.split, recipe.seed)
    by_id = {r["id"]: r for r in kept}
    for uid in left_out:
        r = by_id[uid]
        rejects.add(r["source"], "not in any split list: prepare.split.lists has a train list and this id is in none",
                    line=r["line"], id=uid)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for r in kept:
        if r["id"] in placed:
            rows[placed[r["id"]]].append(r)
    _write_manifests(out, rows)

    summary: dict[str, Any] = {
        "corpora": len(recipe.corpora.labeled),
        "input_rows": input_rows,
        "utterances": sum(len(v) for v in rows.values()),
        "rejected": len(rejects),
        "hours": round(sum(r["duration"] for v in rows.values() for r in v) / 3600.0, 4),
        "utterances_without_speaker": no_speaker,
        "audio": recipe.prepare.labeled_audio,
        "rejected_by_reason": rejects.counts(),
        "top_rejected_chars": [f"{describe_char(ch)} x{n}" for ch, n in bad_chars.most_common(TOP_CHARS)],
    }
    stats = split_stats(rows)
    for split in SPLITS:
        for key, value in stats[split].items():
            summary[f"{split}_{key}"] = value
    summary["speakers_in_two_splits"] = stats["shared_speakers"]
    tokenizer = _tokenizer(recipe, normalizer, rows, out / "tokenizer")
    # shown after the summary table by run_prepare (printed now they would scroll away during VAD)
    summary["warnings"] = advice + split_warnings(rows, recipe.prepare.split) + tokenizer.pop("warnings", [])
    summary.update(tokenizer)
    kept_rows = [r for v in rows.values() for r in v]
    if kept_rows:
        # characters per second shows transcripts that cannot belong to their audio (far too long/short)
        histograms_png(out / "labeled.png", {
            "utterance length (s)": [r["duration"] for r in kept_rows],
            "characters per second": [len(r["text"]) / max(r["duration"], 1e-3) for r in kept_rows],
        }, title=f"{recipe.name}: labeled utterances kept")
        summary["figure"] = str(out / "labeled.png")
    return summary, rejects


def _tokenizer(recipe, normalizer: Normalizer, rows: dict[str, list[dict[str, Any]]], folder: Path) -> dict[str, Any]:
    train_texts = [r["text"] for r in rows["train"]]
    if not train_texts:
        return {"tokenizer": "not trained: the train split is empty"}
    cfg = recipe.prepare.tokenizer
    # characters stay the train split's own vocabulary; sentencepiece may learn pieces from more text
    use_corpus = cfg.use_text_corpus and cfg.type == "sentencepiece"
    extra, skipped = _text_corpus_lines(recipe, normalizer) if use_corpus else ([], 0)
    tok = train_tokenizer(train_texts + extra, cfg, folder)
    unknown = sum(1 for split in ("dev", "test") for r in rows[split] if tok.unk_id in tok.encode(r["text"]))
    out = {"tokenizer": f"{cfg.type} ({len(tok.labels)} labels) in {folder}",
           "tokenizer_text_corpus_lines": len(extra),
           "tokenizer_text_corpus_lines_skipped": skipped,
           "dev_test_utterances_with_unknown_tokens": unknown}
    if cfg.type == "char":
        # a character only dev/test use is one the model can never write: name it, not just count utterances
        labels = set(tok.labels)
        missing = Counter(ch for split in ("dev", "test") for r in rows[split] for ch in r["text"]
                          if not ch.isspace() and ch not in labels)
        out["dev_test_chars_not_in_tokenizer"] = [f"{describe_char(ch)} x{n}" for ch, n in missing.most_common()]
        if missing:
            named = ", ".join(describe_char(ch) for ch, _ in missing.most_common(TOP_CHARS))
            out.setdefault("warnings", []).append(
                f"the tokenizer (characters of the train transcripts) lacks {named}, used in {unknown} dev/test "
                "utterance(s): the model cannot write them, so those utterances always count errors; train "
                "utterances holding them fix that")
    return out
