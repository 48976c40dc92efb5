"""Labeled ingest on real recorded speech from ../shared/corpora, read in place.

The corpora are converted at test time into each supported layout inside tmp_path (index files are
written there; audio is referenced by absolute path or symlinked, never copied into the repo).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrasr.audio.decode import probe
from lrasr.data.manifest import read_manifest
from lrasr.recipe import Recipe
from lrasr.stages.prepare_labeled import prepare_labeled

pytestmark = pytest.mark.shared

RESPIN_LANGUAGES = {"bh": "bho", "bn": "bn", "ch": "hne", "kn": "kn", "mg": "mag", "mr": "mr", "mt": "mai", "te": "te"}


def tsv_rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


def run(tmp_path: Path, language: str, corpora: list[dict], name: str = "w", **prepare):
    rec = Recipe.model_validate({"name": "real", "language": language, "workdir": str(tmp_path / name),
                                 "corpora": {"labeled": corpora}, "prepare": prepare})
    summary, rejects = prepare_labeled(rec)
    assert summary["input_rows"] == summary["utterances"] + len(rejects)
    manifests = {s: read_manifest(rec.workdir / "prepare" / s / "manifest.tsv") for s in ("train", "dev", "test")}
    return summary, rejects, manifests


def test_malayalam_crowd_tsv_in_place(tmp_path, shared_corpora):
    corpus = shared_corpora / "ml_smc_msc_crowd"
    summary, rejects, man = run(tmp_path, "ml", [{
        "format": "tsv", "path": str(corpus / "transcripts.tsv"), "speaker_column": "speaker_id",
        "duration_column": "duration_s", "speakers": "speakers.tsv"}])
    assert summary["input_rows"] == 898 and summary["utterances"] >= 890
    assert summary["hours"] == pytest.approx(1.0, abs=0.05)
    speakers = {s: set(m["speaker"]) for s, m in man.items()}
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    assert summary["train_speakers"] + summary["dev_speakers"] + summary["test_speakers"] >= 80
    for split in ("dev", "test"):
        assert 0.05 < summary[f"{split}_hours"] / summary["hours"] < 0.2
        assert 0 < summary[f"{split}_oov_rate"] < 1
    genders = set(man["train"]["gender"])
    assert {"male", "female"} <= genders  # joined from speakers.tsv ("Male", "Female", "default")
    train = man["train"]
    assert not train["text"].str.contains(r"[.,?!|]").any()  # punctuation of the raw text is gone
    assert train["raw_text"].str.contains(r"[.?]").any()
    vocab = json.loads((tmp_path / "w" / "prepare" / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    assert 40 < len(vocab["labels"]) < 90 and all("\u0d00" <= c <= "\u0d7f" for c in vocab["labels"][3:])


def _respin_kaldi(shared: Path, folder: Path, code: str) -> int:
    src = shared / "multi_respin_samples"
    mine = [r for r in tsv_rows(src / "transcripts.tsv") if r["lang"] == code]
    folder.mkdir(parents=True)
    (folder / "wav.scp").write_text("".join(f"{Path(r['path']).stem} {src / r['path']}\n" for r in mine), encoding="utf-8")
    (folder / "text").symlink_to(src / "text_files_original" / f"text_{code}")  # the original Kaldi text file
    (folder / "utt2spk").write_text("".join(f"{Path(r['path']).stem} {r['speaker_id']}\n" for r in mine), encoding="utf-8")
    genders = {r["speaker_id"]: r["gender"] for r in mine}
    (folder / "spk2gender").write_text("".join(f"{s} {g}\n" for s, g in genders.items()), encoding="utf-8")
    return len(mine)


@pytest.mark.parametrize("code", sorted(RESPIN_LANGUAGES))
def test_respin_as_kaldi_in_eight_languages(tmp_path, shared_corpora, code):
    n = _respin_kaldi(shared_corpora, tmp_path / "kaldi", code)
    summary, rejects, man = run(tmp_path, RESPIN_LANGUAGES[code], [{"format": "kaldi", "path": str(tmp_path / "kaldi")}],
                                split={"dev": 0.0, "test": 0.0})
    assert summary["input_rows"] == n and summary["utterances"] == n, rejects.rows[:3]
    train = man["train"]
    assert set(train["gender"]) <= {"male", "female"} and train["speaker"].str.len().min() > 0
    assert train["duration"].between(0.5, 30).all()


def test_telugu_common_voice_release(tmp_path, shared_corpora):
    src = shared_corpora / "te_commonvoice_119"
    release = tmp_path / "cv-te"
    release.mkdir()
    (release / "clips").symlink_to(src / "clips")
    (release / "other.tsv").symlink_to(src / "other_original.tsv")
    (release / "clip_durations.tsv").symlink_to(src / "clip_durations.tsv")
    summary, rejects, man = run(tmp_path, "te", [{"format": "commonvoice", "path": str(release), "split": "other"}])
    assert summary["input_rows"] == 119
    assert summary["utterances"] >= 115, rejects.rows[:3]  # declared clip durations agree with the audio
    assert summary["train_speakers"] + summary["dev_speakers"] + summary["test_speakers"] == 3
    assert summary["speakers_in_two_splits"] == 0


def _layouts(shared: Path, tmp: Path, n: int = 16) -> dict[str, dict]:
    """The first ``n`` Malayalam rows written as csv, kaldi, fairseq, nemo and folder corpora."""
    src = shared / "ml_smc_msc_crowd"
    rows = tsv_rows(src / "transcripts.tsv")[:n]
    audio = [src / r["path"] for r in rows]
    ids = [Path(r["path"]).stem for r in rows]
    texts = [r["text"] for r in rows]
    (tmp / "t.csv").write_text("path,text,speaker\n" + "".join(
        f'{a},"{t}",{r["speaker_id"]}\n' for a, t, r in zip(audio, texts, rows)), encoding="utf-8")
    kaldi = tmp / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("".join(f"{i} {a}\n" for i, a in zip(ids, audio)), encoding="utf-8")
    (kaldi / "text").write_text("".join(f"{i} {t}\n" for i, t in zip(ids, texts)), encoding="utf-8")
    fs = tmp / "fairseq"
    fs.mkdir()
    (fs / "train.tsv").write_text(f"{src}\n" + "".join(f"{r['path']}\t{probe(a).num_frames}\n" for r, a in zip(rows, audio)),
                                  encoding="utf-8")
    (fs / "train.wrd").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (tmp / "m.json").write_text("".join(json.dumps({"audio_filepath": str(a), "duration": float(r["duration_s"]),
                                                    "text": t}, ensure_ascii=False) + "\n"
                                        for a, t, r in zip(audio, texts, rows)), encoding="utf-8")
    folder = tmp / "folder"
    folder.mkdir()
    for i, a, t in zip(ids, audio, texts):
        (folder / f"{i}.opus").symlink_to(a)
        (folder / f"{i}.txt").write_text(t + "\n", encoding="utf-8")
    return {"csv": {"format": "csv", "path": str(tmp / "t.csv")}, "kaldi": {"format": "kaldi", "path": str(kaldi)},
            "fairseq": {"format": "fairseq", "path": str(fs)}, "nemo": {"format": "nemo", "path": str(tmp / "m.json")},
            "folder": {"format": "folder", "path": str(folder)}}


def test_same_utterances_from_every_layout(tmp_path, shared_corpora):
    layouts = _layouts(shared_corpora, tmp_path)
    seen = {}
    for name, corpus in layouts.items():
        summary, rejects, man = run(tmp_path, "ml", [corpus], name=f"w-{name}", split={"dev": 0.0, "test": 0.0})
        assert summary["utterances"] == 16 and len(rejects) == 0, (name, rejects.rows[:2])
        train = man["train"]
        seen[name] = sorted(zip((Path(a).stem for a in train["audio"]), train["text"], train["duration"].round(1)))
    first = seen.pop("csv")
    for name, value in seen.items():
        assert value == first, name


def test_fairseq_roundtrip_on_real_speech(tmp_path, shared_corpora):
    from lrasr.data.export import export_manifests

    layouts = _layouts(shared_corpora, tmp_path, n=12)
    summary, rejects, _ = run(tmp_path, "ml", [layouts["fairseq"]], name="rt", split={"by": "corpus"})
    assert summary["utterances"] == 12 and len(rejects) == 0
    export_manifests(tmp_path / "rt" / "prepare", "fairseq", tmp_path / "out")

    def entries(folder: Path) -> set[tuple[str, str, str]]:
        lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
        words = (folder / "train.wrd").read_text(encoding="utf-8").splitlines()
        return {(str((Path(lines[0]) / rel).resolve()), samples, w)
                for (rel, samples), w in zip((line.split("\t") for line in lines[1:]), words)}

    original = entries(tmp_path / "fairseq")
    exported = entries(tmp_path / "out")
    # normalization strips the transcripts' punctuation: compare audio + samples, and texts after it
    assert {(a, s) for a, s, _ in exported} == {(a, s) for a, s, _ in original}
    assert len(exported) == 12 and all(w and "." not in w for *_, w in exported)
