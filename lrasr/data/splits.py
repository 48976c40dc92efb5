"""Train/dev/test assignment: explicit lists, corpus-defined splits, or speaker-disjoint by ratio.

Precedence: ``prepare.split.lists`` (explicit id lists) decide for every id they name; then a corpus's
``assign_split``; everything else is split by ratio of audio duration, grouped by speaker
(``by: speaker``, so no speaker is in two splits), by utterance (``by: utterance``), or all to train
(``by: corpus``: only corpus-defined splits go elsewhere). Utterances without a speaker form their
own group. The result depends only on the items and the seed, not on their order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lrasr.errors import LrasrError
from lrasr.recipe import SplitConfig

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitInput:
    id: str
    duration: float
    speaker: str | None = None
    split: str | None = None  # corpus-defined split, if any


def read_split_lists(lists: dict[str, Path]) -> dict[str, str]:
    """{utterance id: split} from files with one id per line. An id in two lists is an error."""
    out: dict[str, str] = {}
    for split, path in lists.items():
        if not Path(path).is_file():
            raise LrasrError(f"split list for {split} not found (prepare.split.lists.{split})", path)
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LrasrError(f"cannot read split list for {split}: {exc}", path) from None
        for number, line in enumerate(lines, start=1):
            uid = line.strip().split("\t")[0].strip()
            if not uid:
                continue
            if uid in out and out[uid] != split:
                raise LrasrError(f"id {uid} is listed for both {out[uid]} and {split}", path, number)
            out[uid] = split
    return out


def _groups(items: Sequence[SplitInput], by: str) -> dict[str, list[SplitInput]]:
    groups: dict[str, list[SplitInput]] = defaultdict(list)
    for item in items:
        key = f"spk:{item.speaker}" if by == "speaker" and item.speaker else f"utt:{item.id}"
        groups[key].append(item)
    return groups


def _ratio_split(items: Sequence[SplitInput], cfg: SplitConfig, seed: int) -> dict[str, str]:
    if cfg.by == "corpus" or not items:
        return {it.id: "train" for it in items}
    groups = _groups(items, cfg.by)
    seconds = {key: sum(it.duration for it in members) for key, members in groups.items()}
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = sum(seconds.values())
    chosen: dict[str, str] = {}
    for split, ratio in (("test", cfg.test), ("dev", cfg.dev)):
        if ratio <= 0:
            continue
        target, got = ratio * total, 0.0
        for key in order:
            if len(groups) - len(chosen) <= 1:
                break  # the last group stays in train
            if key not in chosen and got + seconds[key] / 2 < target:  # taking it gets closer to the target
                chosen[key] = split
                got += seconds[key]
        rest = [k for k in order if k not in chosen]
        if got == 0.0 and len(rest) > 1:  # every group is larger than the target: take the smallest
            smallest = min(rest, key=lambda k: seconds[k])
            chosen[smallest] = split
    return {it.id: chosen.get(key, "train") for key, members in groups.items() for it in members}


def assign_splits(items: Sequence[SplitInput], cfg: SplitConfig, seed: int) -> tuple[dict[str, str], list[str]]:
    """({id: split} for every placed item, [ids left out because explicit lists exclude them]).

    With explicit lists that include ``train``, an id in no list is left out (the caller rejects it);
    without a train list, unlisted ids follow the corpus splits and the ratio split.
    """
    listed = read_split_lists(cfg.lists) if cfg.lists else {}
    out: dict[str, str] = {}
    left_out: list[str] = []
    pool = []
    for item in items:
        if item.id in listed:
            out[item.id] = listed[item.id]
        elif cfg.lists and "train" in cfg.lists:
            left_out.append(item.id)
        elif item.split:
            out[item.id] = item.split
        else:
            pool.append(item)
    out.update(_ratio_split(sorted(pool, key=lambda it: it.id), cfg, seed))
    return out, left_out


def oov_rate(train_texts: Iterable[str], texts: Iterable[str]) -> float | None:
    """Fraction of running words in ``texts`` not seen in ``train_texts`` (None when there are none)."""
    vocab = {w for t in train_texts for w in t.split()}
    total = oov = 0
    for text in texts:
        for word in text.split():
            total += 1
            oov += word not in vocab
    return oov / total if total else None


def split_stats(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Per split: utterances, hours, speakers (known ones), and dev/test OOV word rate against train.

    ``rows`` maps split -> manifest rows with ``duration``, ``speaker`` and ``text``.
    """
    train_texts = [r["text"] for r in rows.get("train", [])]
    stats = {}
    for split in SPLITS:
        members = rows.get(split, [])
        entry = {
            "utterances": len(members),
            "hours": round(sum(float(r["duration"]) for r in members) / 3600.0, 4),
            "speakers": len({r["speaker"] for r in members if r.get("speaker")}),
        }
        if split != "train":
            rate = oov_rate(train_texts, (r["text"] for r in members))
            entry["oov_rate"] = None if rate is None else round(rate, 4)
        stats[split] = entry
    speakers = {s: {r["speaker"] for r in rows.get(s, []) if r.get("speaker")} for s in SPLITS}
    stats["shared_speakers"] = len((speakers["train"] & (speakers["dev"] | speakers["test"])) |
                                   (speakers["dev"] & speakers["test"]))
    return stats


FEW_SPEAKERS = 10  # below this a speaker-disjoint dev/test holds one or two voices: say so


def split_warnings(rows: dict[str, list[dict]], cfg: SplitConfig) -> list[str]:
    """What a user would not expect from the ratio split, one line each: a dev/test split asked for but
    left empty, a split far larger or smaller than asked (speakers move as whole units), and a
    speaker-disjoint split over so few speakers that dev/test scores measure one or two voices.

    ``rows`` maps split -> manifest rows (``duration``, ``speaker``, and ``split`` when a corpus assigned
    it). Splits a corpus or an explicit list decided are not second-guessed.
    """
    if cfg.lists or cfg.by == "corpus":
        return []
    pool = {s: [r for r in rows.get(s, []) if not r.get("split")] for s in SPLITS}  # what the ratio split placed
    seconds = {s: sum(float(r["duration"]) for r in pool[s]) for s in SPLITS}
    total = sum(seconds.values())
    speakers = {s: {r["speaker"] for r in pool[s] if r.get("speaker")} for s in SPLITS}
    n_speakers = len(set().union(*speakers.values()))
    # utterances without a speaker are groups of their own: the speaker counts would then mislead
    by_speaker = cfg.by == "speaker" and n_speakers > 0 and all(r.get("speaker") for v in pool.values() for r in v)
    out = []
    for split in ("dev", "test"):
        asked = getattr(cfg, split)
        if asked <= 0 or total <= 0 or len(pool[split]) < len(rows.get(split, [])):
            continue  # nothing to split, or a corpus filled this split
        got = seconds[split] / total
        if got == 0 and by_speaker:
            out.append(f"prepare.split.{split}: {asked:.0%} asked for, but {split} is empty: the speaker-disjoint "
                       f"split keeps each of the {n_speakers} speaker(s) whole and train gets one first; set "
                       f"prepare.split.by: utterance ({split} then holds voices heard in training: optimistic "
                       f"scores), add speakers, or set {split}: 0")
        elif got == 0:
            out.append(f"prepare.split.{split}: {asked:.0%} asked for, but {split} is empty: too few utterances")
        elif not asked / 2 <= got <= asked * 2:
            out.append(f"prepare.split.{split}: {got:.0%} of the audio went to {split} ({asked:.0%} asked for): "
                       + (f"each of the {n_speakers} speakers stays whole" if by_speaker else "utterances stay whole"))
    if by_speaker and n_speakers < FEW_SPEAKERS and (speakers["dev"] or speakers["test"]):
        counts = ", ".join(f"{s} {len(speakers[s])}" for s in SPLITS)
        out.append(f"only {n_speakers} speakers for a speaker-disjoint split (per split: {counts}): the model "
                   "learns from few voices and dev/test scores describe one or two people")
    return out
