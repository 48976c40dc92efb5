"""Labeled ingest over generated audio (always runs): every layout, every named bad input, row accounting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lrasr.data.manifest import read_manifest
from lrasr.errors import LrasrError
from lrasr.recipe import Recipe
from lrasr.stages.prepare_labeled import prepare_labeled

ML = ["ഞാൻ ഒരു പാട്ട് പാടട്ടെ", "അത്തം പത്തോണം", "വേറെ വിശേഷമൊന്നുമില്ല", "കയ്യിൽ കാശുണ്ടോ", "സമയമെത്രയായി",
      "അടിതെറ്റിയാൽ ആനയും വീഴും"]


def tone(path: Path, seconds: float = 1.0, rate: int = 16000, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), rate)
    return path


def recipe(tmp_path: Path, corpora: list[dict], language: str = "ml", **prepare) -> Recipe:
    prepare.setdefault("split", {"dev": 0.0, "test": 0.0})
    return Recipe.model_validate({"name": "t", "language": language, "workdir": str(tmp_path / "work"),
                                  "corpora": {"labeled": corpora}, "prepare": prepare})


def run(rec: Recipe, jobs: int = 1):
    summary, rejects = prepare_labeled(rec, jobs=jobs)
    assert summary["input_rows"] == summary["utterances"] + summary["rejected"] == \
        summary["utterances"] + len(rejects)
    return summary, rejects


def manifest(rec: Recipe, split: str = "train"):
    return read_manifest(rec.workdir / "prepare" / split / "manifest.tsv")


def reasons(rejects) -> dict[str, dict]:
    return {str(r.get("id") or r.get("line") or Path(r["source"]).name): r for r in rejects.rows}


def test_tsv_bad_rows_each_named_with_line(tmp_path):
    d = tmp_path / "corpus"
    for i in range(3):
        tone(d / f"ok{i}.wav", 1.0 + i * 0.1, rate=8000 if i == 2 else 16000)
    tone(d / "short.wav", 0.05)
    tone(d / "long.wav", 3.0)
    (d / "garbage.wav").write_bytes(b"RIFF\x00\x00not really audio" * 10)
    rows = [
        ("ok0", "ok0.wav", ML[0], "s1", "1.0"),      # 2
        ("ok1", "ok1.wav", ML[1], "s2", ""),         # 3
        ("ok2", "ok2.wav", ML[2], "s3", "1.2"),      # 4
        ("gone", "missing.wav", ML[3], "s1", ""),    # 5 missing audio
        ("empty", "ok0.wav", "   ", "s1", ""),       # 6 empty text
        ("ok0", "ok1.wav", ML[4], "s1", ""),         # 7 duplicate id
        ("mism", "ok1.wav", ML[4], "s1", "3.5"),     # 8 declared duration disagrees
        ("short", "short.wav", ML[5], "s1", ""),     # 9 too short
        ("long", "long.wav", ML[5], "s1", ""),       # 10 too long (max 2.5 s)
        ("latin", "ok1.wav", "ഞാൻ hello", "s1", ""), # 11 outside the whitelist
        ("junk", "garbage.wav", ML[0], "s1", ""),    # 12 undecodable audio
        ("dig", "ok1.wav", "വർഷം 2020", "s1", ""),   # 13 digits rejected by default
    ]
    lines = ["id\tpath\ttext\tspeaker\tdur"] + ["\t".join(r) for r in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    data += b"badbytes\tok0.wav\t\xff\xfe broken\ts1\t\n"  # 14 undecodable bytes
    data += b"fields\tok0.wav\n"  # 15 wrong number of fields
    (d / "t.tsv").write_bytes(data)
    rec = recipe(tmp_path, [{"format": "tsv", "path": str(d / "t.tsv"), "duration_column": "dur"}],
                 filters={"max_seconds": 2.5})
    summary, rejects = run(rec)
    assert summary["input_rows"] == 14 and summary["utterances"] == 3
    by_line = {r["line"]: r["reason"] for r in rejects.rows}
    assert by_line[5].startswith("missing audio") and "missing.wav" in by_line[5]
    assert by_line[6] == "empty text"
    assert by_line[7].startswith("duplicate id: ok0 already at") and "t.tsv:2" in by_line[7]
    assert by_line[8].startswith("duration mismatch: declared 3.50 s")
    assert by_line[9].startswith("too short") and by_line[10].startswith("too long")
    assert by_line[11].startswith("characters outside whitelist") and "U+0065 LATIN SMALL LETTER E" in by_line[11]
    assert by_line[12].startswith("undecodable audio") and "garbage.wav" in by_line[12]
    assert by_line[13].startswith("characters outside whitelist") and "DIGIT TWO" in by_line[13]
    assert by_line[14].startswith("undecodable text") and by_line[15].startswith("malformed row")
    assert all(r["source"] == str(d / "t.tsv") for r in rejects.rows)
    assert summary["top_rejected_chars"][0].startswith("'l' U+006C") and summary["top_rejected_chars"][0].endswith("x2")
    train = manifest(rec)
    assert list(train["id"]) == ["ok0", "ok1", "ok2"]
    assert list(train["text"]) == ML[:3] and list(train["raw_text"]) == ML[:3]
    assert train["duration"].tolist() == pytest.approx([1.0, 1.1, 1.2], abs=0.01)
    assert set(train.columns) >= {"id", "audio", "duration", "text", "raw_text", "speaker", "source"}
    assert Path(train["audio"][0]).is_absolute()  # corpora outside the workdir are referenced by absolute path
    assert (rec.workdir / "prepare" / "tokenizer" / "tokenizer.json").is_file()
    assert (rec.workdir / "prepare" / "labeled.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_column_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "t.tsv").write_text("file\tsentence\nx.wav\tഞാൻ\n", encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "tsv", "path": str(tmp_path / "t.tsv")}])
    with pytest.raises(LrasrError, match=r"t\.tsv:1: missing column\(s\) path, text"):
        prepare_labeled(rec)
    rec = recipe(tmp_path, [{"format": "tsv", "path": str(tmp_path / "t.tsv"), "audio_column": "file",
                             "text_column": "sentence", "speaker_column": "spk"}])
    with pytest.raises(LrasrError, match="missing column.*spk"):  # named explicitly: must exist
        prepare_labeled(rec)


def test_csv_with_quotes_gender_and_flac_rewrite(tmp_path):
    d = tmp_path / "c"
    tone(d / "a.wav", 1.0, rate=22050)
    tone(d / "b.wav", 1.0, rate=8000)
    (d / "t.csv").write_text('path,text,speaker,sex\na.wav,"ഞാൻ, ഒരു",A,F\nb.wav,"അത്തം ""പത്തോണം""",B,male\n',
                             encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "csv", "path": str(d / "t.csv"), "gender_column": "sex"}], labeled_audio="flac")
    summary, _ = run(rec)
    train = manifest(rec)
    assert list(train["text"]) == ["ഞാൻ ഒരു", "അത്തം പത്തോണം"] and list(train["gender"]) == ["female", "male"]
    for rel in train["audio"]:
        path = rec.workdir / "prepare" / "train" / rel
        assert not Path(rel).is_absolute() and path.suffix == ".flac"
        info = sf.info(str(path))
        assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - 1.0) < 0.01
    # a second run reuses the FLAC files it finds instead of decoding again
    flacs = sorted((rec.workdir / "prepare" / "labeled_audio").glob("*.flac"))
    stamps = [p.stat().st_mtime_ns for p in flacs]
    again, _ = run(rec)
    assert again["utterances"] == 2 and [p.stat().st_mtime_ns for p in flacs] == stamps


def test_kaldi_segments_pipes_and_untranscribed(tmp_path):
    d = tmp_path / "kaldi"
    tone(d / "rec1.wav", 3.0)
    tone(d / "rec2.wav", 1.0)
    (d / "wav.scp").write_text("rec1 rec1.wav\nrec2 " + str(d / "rec2.wav") + "\nrec3 sox x.wav -t wav - |\n"
                               "rec4 rec2.wav\n", encoding="utf-8")
    (d / "segments").write_text("u1 rec1 0.0 1.2\nu2 rec1 1.5 2.9\nu3 rec2 0 -1\nu4 rec3 0 1\nu5 rec1 2.5 9.0\n"
                                "u6 rec1 0 1\n", encoding="utf-8")
    (d / "text").write_text(f"u1 {ML[0]}\nu2 {ML[1]}\nu3 {ML[2]}\nu4 {ML[3]}\nu5 {ML[4]}\nu7 {ML[5]}\n", encoding="utf-8")
    (d / "utt2spk").write_text("u1 A\nu2 A\nu3 B\n", encoding="utf-8")
    (d / "spk2gender").write_text("A f\nB m\n", encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "kaldi", "path": str(d)}])
    summary, rejects = run(rec)
    assert summary["utterances"] == 3
    why = {r.get("id"): r["reason"] for r in rejects.rows}
    assert why["u4"].startswith("piped command in wav.scp")
    assert why["u5"].startswith("bad segment")
    assert why["u6"].startswith("no transcript") and why["u7"].startswith("missing audio")
    assert why["rec4"].startswith("no transcript")
    train = manifest(rec).set_index("id")
    assert train.loc["u1", "duration"] == pytest.approx(1.2, abs=0.01)
    assert train.loc["u2", "duration"] == pytest.approx(1.4, abs=0.01)
    assert train.loc["u1", "speaker"] == "A" and train.loc["u3", "gender"] == "male"
    assert train.loc["u1", "audio"].endswith(".flac") and train.loc["u2", "audio"].endswith(".flac")  # cut
    assert train.loc["u3", "audio"] == str(d / "rec2.wav")  # "0 -1" spans the whole recording: referenced


def test_commonvoice_release_layout(tmp_path):
    d = tmp_path / "cv"
    for name in ("c1", "c2", "c3"):
        tone(d / "clips" / f"{name}.wav", 1.0)
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
    rows = ["spkA\tc1.wav\tఅతను \"రాముడు\" అన్నాడు\t2\t0\t\tmale_masculine\t\tte\t",
            "spkB\tc2.wav\tతెలుగు\t2\t0\t\t\t\tte\t", "spkB\tc3.wav\tతెలుగు భాష\t2\t0\t\t\t\tte\t"]
    (d / "validated.tsv").write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    (d / "clip_durations.tsv").write_text("clip\tduration[ms]\nc1.wav\t1000\nc2.wav\t1000\nc3.wav\t4000\n",
                                          encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "commonvoice", "path": str(d)}], language="te")
    summary, rejects = run(rec)
    assert summary["utterances"] == 2 and rejects.rows[0]["reason"].startswith("duration mismatch")
    train = manifest(rec).set_index("id")
    assert train.loc["c1", "text"] == "అతను రాముడు అన్నాడు" and train.loc["c1", "gender"] == "male"
    (d / "test.tsv").write_text(header + "\n" + rows[1] + "\n", encoding="utf-8")
    summary, _ = run(recipe(tmp_path / "t", [{"format": "commonvoice", "path": str(d), "split": "test"}], language="te"))
    assert summary["test_utterances"] == 1 and summary["train_utterances"] == 0  # the release's own split
    assert summary["tokenizer"].startswith("not trained")
    with pytest.raises(LrasrError, match="set the corpus's split"):
        prepare_labeled(recipe(tmp_path, [{"format": "commonvoice", "path": str(d), "split": "dev"}], language="te"))


@pytest.mark.parametrize("labels", ["wrd", "ltr"])
def test_fairseq_manifest_and_misaligned_labels(tmp_path, labels):
    d = tmp_path / "fs"
    tone(d / "audio" / "a.wav", 1.0)
    tone(d / "audio" / "b.wav", 0.5)
    (d / "train.tsv").write_text(f"{d / 'audio'}\na.wav\t16000\nb.wav\t20000\nc.wav\n", encoding="utf-8")
    text = [ML[0], ML[1], ML[2]]
    body = text if labels == "wrd" else [" ".join(" ".join(w) + " |" for w in t.split()) for t in text]
    (d / f"train.{labels}").write_text("\n".join(body) + "\n", encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "fairseq", "path": str(d), "labels": labels}])
    summary, rejects = run(rec)
    assert manifest(rec)["text"].tolist() == [ML[0]]
    assert {r["line"]: r["reason"].split(":")[0] for r in rejects.rows} == {3: "duration mismatch", 4: "malformed row"}
    (d / f"train.{labels}").write_text(body[0] + "\n", encoding="utf-8")
    with pytest.raises(LrasrError, match="must align"):
        prepare_labeled(rec)


def test_nemo_json_lines(tmp_path):
    d = tmp_path / "nemo"
    tone(d / "long.wav", 3.0)
    tone(d / "a.wav", 1.0)
    lines = [json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": ML[0], "speaker": 7}, ensure_ascii=False),
             json.dumps({"audio_filepath": str(d / "long.wav"), "offset": 1.0, "duration": 1.5, "text": ML[1]},
                        ensure_ascii=False),
             "{not json", json.dumps({"audio_filepath": "a.wav", "duration": 1.0}), "[1, 2]",
             json.dumps({"id": "whole", "audio_filepath": "long.wav", "offset": 0, "duration": 3.0, "text": ML[2]},
                        ensure_ascii=False),
             json.dumps({"id": "head", "audio_filepath": "long.wav", "offset": 0, "duration": 1.0, "text": ML[3]},
                        ensure_ascii=False)]
    (d / "m.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "nemo", "path": str(d / "m.json")}])
    summary, rejects = run(rec)
    assert summary["utterances"] == 4
    assert [r["reason"].split(":")[0] for r in rejects.rows] == ["malformed row", "missing key", "malformed row"]
    train = manifest(rec).set_index("id")
    assert train.loc["a", "speaker"] == "7"
    assert train.loc["long_00001000", "duration"] == pytest.approx(1.5, abs=0.01)
    assert train.loc["long_00001000", "audio"].endswith(".flac") and train.loc["head", "audio"].endswith(".flac")
    assert train.loc["head", "duration"] == pytest.approx(1.0, abs=0.01)
    assert train.loc["whole", "audio"] == str(d / "long.wav")  # a "segment" spanning the file is the file


def test_folder_layout(tmp_path):
    d = tmp_path / "folder"
    tone(d / "spk1" / "u1.wav", 1.0)
    tone(d / "spk1" / "u2.flac", 1.0)
    tone(d / "spk2" / "u3.wav", 1.0)
    (d / "spk1" / "u1.txt").write_text(ML[0] + "\n", encoding="utf-8")
    (d / "spk1" / "u2.txt").write_bytes("ഞാൻ\n".encode() + b"\xc3\x28 bad\n")
    (d / "spk2" / "orphan.txt").write_text(ML[2], encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "folder", "path": str(d)}])
    summary, rejects = run(rec)
    assert summary["utterances"] == 1 and summary["input_rows"] == 4
    why = {Path(r["source"]).name: (r["reason"], r.get("line")) for r in rejects.rows}
    assert why["u2.txt"][0].startswith("undecodable text") and why["u2.txt"][1] == 2
    assert why["u3.wav"][0].startswith("no transcript")
    assert why["orphan.txt"][0].startswith("missing audio")
    train = manifest(rec)
    assert train["id"].tolist() == ["u1"] and train["speaker"].tolist() == ["spk1"]


def test_duplicates_across_corpora_and_pool_matches_serial(tmp_path, monkeypatch):
    import lrasr.data.ingest_audio as ingest_audio

    monkeypatch.setattr(ingest_audio, "POOL_MIN_SECONDS", 0.0)  # small job: force the process pool
    used = []
    real_pool = ingest_audio.ProcessPoolExecutor
    monkeypatch.setattr(ingest_audio, "ProcessPoolExecutor", lambda *a, **k: used.append(k) or real_pool(*a, **k))
    d = tmp_path / "c"
    for i in range(6):
        tone(d / f"u{i}.wav", 0.5 + 0.1 * i)
    table = "path\ttext\tspeaker\n" + "".join(f"u{i}.wav\t{ML[i]}\ts{i % 3}\n" for i in range(6))
    (d / "a.tsv").write_text(table, encoding="utf-8")
    (d / "b.tsv").write_text(table.splitlines()[0] + "\n" + table.splitlines()[1] + "\n", encoding="utf-8")
    corpora = [{"format": "tsv", "path": str(d / "a.tsv")}, {"format": "tsv", "path": str(d / "b.tsv")}]
    serial, rej = run(recipe(tmp_path / "s", corpora, split={"dev": 0.2, "test": 0.2}))
    pooled, _ = run(recipe(tmp_path / "p", corpora, split={"dev": 0.2, "test": 0.2}), jobs=2)
    assert [r["reason"].split(":")[0] for r in rej.rows] == ["duplicate id"]
    assert len(used) == 1 and used[0]["max_workers"] == 2
    for key in ("train_utterances", "dev_utterances", "test_utterances", "train_hours"):
        assert serial[key] == pooled[key]


def test_sentencepiece_uses_text_corpus_when_asked(tmp_path):
    d = tmp_path / "c"
    for i in range(3):
        tone(d / f"u{i}.wav", 0.5)
    (d / "t.tsv").write_text("path\ttext\n" + "".join(f"u{i}.wav\t{ML[i]}\n" for i in range(3)), encoding="utf-8")
    (tmp_path / "lm.txt").write_text("\n".join(ML[3:] * 3) + "\nenglish line\n", encoding="utf-8")
    rec = Recipe.model_validate({
        "name": "t", "language": "ml", "workdir": str(tmp_path / "work"),
        "corpora": {"labeled": [{"format": "tsv", "path": str(d / "t.tsv")}], "text": [{"path": str(tmp_path / "lm.txt")}]},
        "prepare": {"split": {"dev": 0, "test": 0},
                    "tokenizer": {"type": "sentencepiece", "vocab_size": 60, "use_text_corpus": True}}})
    summary, _ = run(rec)
    assert summary["tokenizer_text_corpus_lines"] == 9 and summary["tokenizer_text_corpus_lines_skipped"] == 1
    from lrasr.text.tokenizer import load_tokenizer

    tok = load_tokenizer(rec.workdir / "prepare" / "tokenizer")
    assert tok.unk_id not in tok.encode(ML[5])  # characters seen only in the text corpus are covered


def test_explicit_split_lists_in_prepare(tmp_path):
    d = tmp_path / "c"
    for i in range(4):
        tone(d / f"u{i}.wav", 0.5)
    (d / "t.tsv").write_text("path\ttext\tspeaker\n" + "".join(f"u{i}.wav\t{ML[i]}\ts{i}\n" for i in range(4)),
                             encoding="utf-8")
    (tmp_path / "train.txt").write_text("u0\nu1\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("u2\n", encoding="utf-8")
    rec = recipe(tmp_path, [{"format": "tsv", "path": str(d / "t.tsv")}],
                 split={"lists": {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}})
    summary, rejects = run(rec)
    assert (summary["train_utterances"], summary["dev_utterances"], summary["test_utterances"]) == (2, 0, 1)
    assert [(r["id"], r["reason"].split(":")[0]) for r in rejects.rows] == [("u3", "not in any split list")]
    assert manifest(rec, "test")["id"].tolist() == ["u2"] and manifest(rec, "dev").empty
