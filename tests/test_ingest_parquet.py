"""format: parquet (Hugging Face datasets shards, audio inline as {bytes, path}) through the real prepare."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import dead_worker
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import espeak
from lrasr.data import ingest_parquet
from lrasr.data.ingest_parquet import ReadStats, read_parquet
from lrasr.data.manifest import RejectLog, read_manifest
from lrasr.errors import LrasrError
from lrasr.recipe import LabeledCorpus, Recipe
from lrasr.stages.prepare import run_prepare

TEXTS = ["hello world", "good morning", "the cat sat", "open the door", "see you soon", "thank you",
         "one more time", "all done now"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[tuple[bytes, bytes, float]]:
    """(wav bytes at 22.05 kHz, the same as FLAC bytes, seconds) for each of TEXTS, from espeak-ng."""
    folder = tmp_path_factory.mktemp("speech")
    out = []
    for i, text in enumerate(TEXTS):
        wav = espeak(text, folder / f"{i}.wav", voice="en", speed=220)
        data, rate = sf.read(str(wav), dtype="int16")
        buf = io.BytesIO()
        sf.write(buf, data, rate, format="FLAC")
        out.append((wav.read_bytes(), buf.getvalue(), len(data) / rate))
    return out


def write_shard(path: Path, rows: list[dict], row_group_size: int = 2) -> Path:
    """A shard the way the datasets library writes one: audio as a {bytes, path} struct column."""
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "audio": pa.array([r.get("audio") for r in rows], type=audio_type),
        "sentence": pa.array([r.get("text") for r in rows], type=pa.string()),
        "client_id": pa.array([r.get("speaker") for r in rows], type=pa.string()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def corpus_folder(root: Path, speech) -> Path:
    """data/train-...parquet (6 rows: wav, flac, garbage, empty text, no bytes, wav) and data/test-...parquet."""
    (w0, _, _), (_, f1, _), (w2, _, _), (w3, _, _), (_, f4, _), (w5, _, _), (w6, _, _), (_, f7, _) = speech
    write_shard(root / "data" / "train-00000-of-00001.parquet", [
        {"audio": {"bytes": w0, "path": "a0.wav"}, "text": TEXTS[0], "speaker": "s1"},
        {"audio": {"bytes": f1, "path": "a1.flac"}, "text": TEXTS[1], "speaker": "s2"},
        {"audio": {"bytes": b"\x00garbage, not audio" * 50, "path": "a2.wav"}, "text": TEXTS[2], "speaker": "s1"},
        {"audio": {"bytes": w3, "path": "a3.wav"}, "text": "  ", "speaker": "s2"},
        {"audio": {"bytes": None, "path": "a4.wav"}, "text": TEXTS[4], "speaker": "s3"},
        {"audio": {"bytes": w5, "path": "a5.wav"}, "text": TEXTS[5], "speaker": "s3"},
    ])
    write_shard(root / "data" / "test-00000-of-00001.parquet", [
        {"audio": {"bytes": w6, "path": "b6.wav"}, "text": TEXTS[6], "speaker": "s9"},
        {"audio": {"bytes": f7, "path": "b7.flac"}, "text": TEXTS[7], "speaker": "s9"},
    ])
    return root


def make_recipe(tmp_path: Path, corpus: dict, **prepare) -> Recipe:
    return Recipe.model_validate({"name": "pq", "language": "en", "workdir": str(tmp_path / "work"),
                                  "corpora": {"labeled": [corpus]}, "prepare": prepare})


def test_prepare_reads_parquet_shards_with_splits_rejects_and_reuse(tmp_path, speech):
    root = corpus_folder(tmp_path / "hf", speech)
    rec = make_recipe(tmp_path, {"format": "parquet", "path": str(root), "pattern": "data/*.parquet",
                                 "text_column": "sentence", "speaker_column": "client_id"})
    summary = run_prepare(rec)
    lab = summary["labeled"] if "labeled" in summary else summary
    prep = rec.workdir / "prepare"
    train = read_manifest(prep / "train" / "manifest.tsv")
    test = read_manifest(prep / "test" / "manifest.tsv")
    dev = read_manifest(prep / "dev" / "manifest.tsv")
    # file names decide the splits: train-* -> train, test-* -> test, nothing to dev
    assert sorted(train["id"]) == ["a0", "a1", "a5"]
    assert sorted(test["id"]) == ["b6", "b7"]
    assert len(dev) == 0
    by_id = {r["id"]: r for _, r in train.iterrows()} | {r["id"]: r for _, r in test.iterrows()}
    assert by_id["a1"]["speaker"] == "s2" and by_id["a1"]["raw_text"] == TEXTS[1]
    for uid, want in (("a0", speech[0][2]), ("a1", speech[1][2]), ("b7", speech[7][2])):
        folder = prep / ("test" if uid.startswith("b") else "train")
        flac = (folder / by_id[uid]["audio"]).resolve()
        info = sf.info(str(flac))
        assert flac.suffix == ".flac" and info.samplerate == 16000 and info.channels == 1
        assert flac.is_relative_to((prep / "labeled_audio" / "parquet").resolve())
        assert abs(info.duration - want) < 0.01 and abs(float(by_id[uid]["duration"]) - want) < 0.01
    # every bad row is in rejected.tsv naming the shard, its row and why
    rejected = read_manifest(prep / "rejected.tsv", required=("source", "reason"))
    shard = str(root / "data" / "train-00000-of-00001.parquet")
    rows = {int(r["line"]): r for _, r in rejected.iterrows()}
    assert sorted(rows) == [3, 4, 5]
    assert all(r["source"] == shard and r["input"] == "labeled" for r in rows.values())
    assert rows[3]["reason"].startswith("undecodable audio: row index 2")
    assert rows[4]["reason"].startswith("empty text: row index 3")
    assert rows[5]["reason"].startswith("missing audio: row index 4") and "a4.wav" in rows[5]["reason"]
    assert lab["input_rows"] == 8 == lab["utterances"] + lab["rejected"] and lab["utterances"] == 5
    # a second run reuses every FLAC (same files, not rewritten) and gives the same manifests
    flacs = sorted((prep / "labeled_audio" / "parquet").rglob("*.flac"))
    assert len(flacs) == 5
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in flacs}
    stats = ReadStats()
    items = read_parquet(rec.corpora.labeled[0], RejectLog(), prep / "labeled_audio", stats)
    assert stats.reused == 5 and stats.decoded == 0 and len(items) == 5
    run_prepare(rec)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in flacs} == before
    assert read_manifest(prep / "train" / "manifest.tsv").equals(train)


def test_changed_shard_is_decoded_again(tmp_path, speech):
    shard = write_shard(tmp_path / "train.parquet", [{"audio": {"bytes": speech[0][0], "path": "x.wav"},
                                                      "text": TEXTS[0], "speaker": "s"}])
    corpus = LabeledCorpus(format="parquet", path=shard, text_column="sentence")
    stats = ReadStats()
    read_parquet(corpus, RejectLog(), tmp_path / "audio", stats)
    assert stats.decoded == 1
    write_shard(shard, [{"audio": {"bytes": speech[1][0], "path": "x.wav"}, "text": TEXTS[1], "speaker": "s"}])
    stats = ReadStats()
    items = read_parquet(corpus, RejectLog(), tmp_path / "audio", stats)
    assert stats.decoded == 1 and stats.reused == 0
    assert abs(sf.info(str(items[0].audio)).duration - speech[1][2]) < 0.01



def test_row_flac_from_another_decoder_version_is_decoded_again(tmp_path, speech):
    """A row's FLAC whose sidecar has no decoder version (written before it was recorded) or another
    one is decoded again, not reused; the rewritten sidecar names the current version."""
    import json

    from lrasr.audio.decode import DECODE_VERSION

    shard = write_shard(tmp_path / "train.parquet", [{"audio": {"bytes": speech[i][0], "path": f"x{i}.wav"},
                                                      "text": TEXTS[i], "speaker": "s"} for i in range(3)])
    corpus = LabeledCorpus(format="parquet", path=shard, text_column="sentence")
    items = read_parquet(corpus, RejectLog(), tmp_path / "audio", ReadStats())
    sides = [it.audio.with_name(it.audio.name + ".json") for it in items]
    for side, change in zip(sides, ("missing", "other", None)):
        meta = json.loads(side.read_text())
        assert meta["decoder"] == DECODE_VERSION
        if change == "missing":
            del meta["decoder"]
        elif change == "other":
            meta["decoder"] = DECODE_VERSION - 1
        side.write_text(json.dumps(meta))
    stats = ReadStats()
    read_parquet(corpus, RejectLog(), tmp_path / "audio", stats)
    assert stats.decoded == 2 and stats.reused == 1
    assert all(json.loads(s.read_text())["decoder"] == DECODE_VERSION for s in sides)


def test_rows_are_read_one_row_group_and_batch_at_a_time(tmp_path, speech, monkeypatch):
    """10 rows in row groups of 3: the metadata is read per row group, the audio in batches of at most
    BATCH_ROWS rows; reading the whole table (or a whole row group's audio) at once fails this."""
    monkeypatch.setattr(ingest_parquet, "BATCH_ROWS", 2)
    rows = [{"audio": {"bytes": speech[i % 8][0], "path": f"r{i}.wav"}, "text": TEXTS[i % 8], "speaker": f"s{i}"}
            for i in range(10)]
    shard = write_shard(tmp_path / "validation-00000-of-00001.parquet", rows, row_group_size=3)
    assert pq.ParquetFile(shard).num_row_groups == 4

    def whole_file(*args, **kwargs):
        raise AssertionError("the whole file was read at once")

    monkeypatch.setattr(pq, "read_table", whole_file)
    monkeypatch.setattr(pq.ParquetFile, "read", whole_file)
    stats = ReadStats()
    items = read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence"), RejectLog(),
                         tmp_path / "audio", stats)
    assert [it.id for it in items] == [f"r{i}" for i in range(10)]
    assert stats.row_groups == 4
    assert stats.audio_batches == 2 + 2 + 2 + 1 and stats.max_batch_rows == 2
    # one file naming only validation: its split is used (it names a held-out split)
    assert {it.split for it in items} == {"dev"}


def test_split_column_and_train_only_shards(tmp_path, speech):
    rows = [{"audio": {"bytes": speech[i][0], "path": f"c{i}.wav"}, "text": TEXTS[i], "speaker": "s"} for i in range(3)]
    shard = write_shard(tmp_path / "c" / "train-00000-of-00001.parquet", rows)
    corpus = LabeledCorpus(format="parquet", path=tmp_path / "c", text_column="sentence")
    items = read_parquet(corpus, RejectLog(), tmp_path / "audio")
    assert [it.split for it in items] == [None] * 3  # train shards alone: split by ratio later
    table = pq.read_table(shard).append_column("part", pa.array(["train", "validation", "test"]))
    pq.write_table(table, shard)
    corpus = LabeledCorpus(format="parquet", path=shard, text_column="sentence", split_column="part")
    assert [it.split for it in read_parquet(corpus, RejectLog(), tmp_path / "audio")] == ["train", "dev", "test"]


def test_broken_shards_are_one_clear_error(tmp_path, speech):
    shard = write_shard(tmp_path / "x.parquet", [{"audio": {"bytes": speech[0][0], "path": "a.wav"},
                                                  "text": TEXTS[0], "speaker": "s"}])
    with pytest.raises(LrasrError, match=r"x\.parquet.*missing column\(s\) text"):
        read_parquet(LabeledCorpus(format="parquet", path=shard), RejectLog(), tmp_path / "a")
    paths = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"audio": ["a.wav"], "text": ["hi"]}), paths)
    with pytest.raises(LrasrError, match="not audio bytes"):
        read_parquet(LabeledCorpus(format="parquet", path=paths), RejectLog(), tmp_path / "a")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(LrasrError, match="not a readable parquet file"):
        read_parquet(LabeledCorpus(format="parquet", path=bad), RejectLog(), tmp_path / "a")
    with pytest.raises(LrasrError, match="no parquet files match"):
        read_parquet(LabeledCorpus(format="parquet", path=tmp_path, pattern="none-*.parquet"), RejectLog(),
                     tmp_path / "a")


def test_labeled_audio_flac_links_the_row_flacs_instead_of_copying(tmp_path, speech):
    rows = [{"audio": {"bytes": speech[i][1], "path": f"f{i}.flac"}, "text": TEXTS[i], "speaker": f"s{i}"}
            for i in range(2)]
    shard = write_shard(tmp_path / "train.parquet", rows)
    rec = make_recipe(tmp_path, {"format": "parquet", "path": str(shard), "text_column": "sentence",
                                 "speaker_column": "client_id"}, labeled_audio="flac", split={"dev": 0.0, "test": 0.0})
    run_prepare(rec)
    prep = rec.workdir / "prepare"
    train = read_manifest(prep / "train" / "manifest.tsv")
    assert sorted(train["id"]) == ["f0", "f1"]
    for audio in train["audio"]:
        used = (prep / "train" / audio).resolve()
        assert used.parent == (prep / "labeled_audio").resolve()  # the name `flac` mode gives it
        assert used.stat().st_nlink == 2  # ... and the same file as the row's FLAC under parquet/
    rows = sorted((prep / "labeled_audio" / "parquet").rglob("*.flac"))
    assert {p.stat().st_ino for p in rows} == {(prep / "train" / a).resolve().stat().st_ino for a in train["audio"]}



def test_labeled_audio_reference_makes_no_links(tmp_path, speech):
    """With labeled_audio: reference the manifests point at the row FLACs under parquet/; the names the
    flac mode would use (hard links + sidecars beside parquet/) are not made: nothing would read them."""
    rows = [{"audio": {"bytes": speech[i][1], "path": f"f{i}.flac"}, "text": TEXTS[i], "speaker": f"s{i}"}
            for i in range(2)]
    shard = write_shard(tmp_path / "train.parquet", rows)
    rec = make_recipe(tmp_path, {"format": "parquet", "path": str(shard), "text_column": "sentence",
                                 "speaker_column": "client_id"}, split={"dev": 0.0, "test": 0.0})
    run_prepare(rec)
    prep = rec.workdir / "prepare"
    assert sorted(p.name for p in (prep / "labeled_audio").iterdir()) == ["parquet"]
    train = read_manifest(prep / "train" / "manifest.tsv")
    for audio in train["audio"]:
        used = (prep / "train" / audio).resolve()
        assert used.is_relative_to((prep / "labeled_audio" / "parquet").resolve()) and used.stat().st_nlink == 1


def test_huge_row_group_is_named_in_a_warning(tmp_path, speech, monkeypatch):
    """A shard whose audio row group exceeds HUGE_GROUP_ROWS or HUGE_GROUP_BYTES (read into memory whole,
    whatever BATCH_ROWS says) gets one warning line naming it when that audio is read; shards in small
    groups, and a rerun that reuses every FLAC (reading no audio), get none."""
    said: list[str] = []
    monkeypatch.setattr(ingest_parquet, "warn", said.append)
    rows = [{"audio": {"bytes": speech[i][0], "path": f"x{i}.wav"}, "text": TEXTS[i], "speaker": "s"}
            for i in range(4)]
    small = write_shard(tmp_path / "small" / "train.parquet", rows, row_group_size=2)
    one = write_shard(tmp_path / "one" / "train.parquet", rows, row_group_size=4)  # as pandas writes it
    monkeypatch.setattr(ingest_parquet, "HUGE_GROUP_ROWS", 3)
    for _ in range(2):
        for shard in (small, one):
            read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence"), RejectLog(),
                         tmp_path / "audio")
    assert len(said) == 1 and said[0].startswith(f"{one}: row group 0 ") and "in 4 rows" in said[0]
    assert "row_group_size=100" in said[0] and "\n" not in said[0]
    monkeypatch.setattr(ingest_parquet, "HUGE_GROUP_ROWS", 1000)
    # both of small's groups exceed this many bytes (each holds two rows' WAVs): one warning all the same
    monkeypatch.setattr(ingest_parquet, "HUGE_GROUP_BYTES", min(len(speech[i][0]) for i in range(4)))
    said.clear()
    read_parquet(LabeledCorpus(format="parquet", path=small, text_column="sentence"), RejectLog(),
                 tmp_path / "audio2")
    assert len(said) == 1 and said[0].startswith(f"{small}: row group 0 ") and "in 2 rows" in said[0]


def test_killed_decode_worker_is_one_clear_error(tmp_path, speech, monkeypatch):
    """BrokenProcessPool from a worker that died becomes an LrasrError naming the shard and saying to use
    fewer jobs, not a traceback."""
    from concurrent.futures.process import BrokenProcessPool

    monkeypatch.setattr(ingest_parquet, "POOL_MIN_ROWS", 0)
    monkeypatch.setattr(ingest_parquet, "decode_row", dead_worker.die)  # pickled by reference
    shard = write_shard(tmp_path / "train.parquet", [{"audio": {"bytes": speech[0][0], "path": "x.wav"},
                                                      "text": TEXTS[0], "speaker": "s"}])
    with pytest.raises(LrasrError, match="fewer --jobs") as err:
        read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence"), RejectLog(),
                     tmp_path / "audio", jobs=2)
    assert str(err.value).startswith(f"{shard}: ") and "\n" not in str(err.value)
    assert not isinstance(err.value, BrokenProcessPool)


def test_formats_soundfile_cannot_read_go_through_ffmpeg(tmp_path, speech):
    """m4a/AAC bytes (libsndfile does not read them) decode through the torchcodec fallback."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    wav = tmp_path / "x.wav"
    wav.write_bytes(speech[0][0])
    m4a = tmp_path / "x.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(m4a)], check=True)
    shard = write_shard(tmp_path / "train.parquet", [{"audio": {"bytes": m4a.read_bytes(), "path": "x.m4a"},
                                                      "text": TEXTS[0], "speaker": "s"}])
    rejects = RejectLog()
    items = read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence"), rejects, tmp_path / "a")
    assert not rejects.rows and len(items) == 1
    info = sf.info(str(items[0].audio))
    assert info.samplerate == 16000 and abs(info.duration - speech[0][2]) < 0.1  # AAC adds encoder padding


def test_decoding_in_worker_processes_gives_the_same_rows_and_rejects(tmp_path, speech, monkeypatch):
    monkeypatch.setattr(ingest_parquet, "POOL_MIN_ROWS", 0)  # use the pool even for these few rows
    pools = []

    class CountedPool(ingest_parquet.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ingest_parquet, "ProcessPoolExecutor", CountedPool)
    root = corpus_folder(tmp_path / "hf", speech)
    corpus = LabeledCorpus(format="parquet", path=root, text_column="sentence", speaker_column="client_id")
    results = {}
    for jobs in (1, 2):
        rejects, stats = RejectLog(), ReadStats()
        items = read_parquet(corpus, rejects, tmp_path / f"audio{jobs}", stats, jobs=jobs)
        waves = [sf.read(str(it.audio), dtype="int16")[0].tobytes() for it in items]
        results[jobs] = ([(it.id, it.split) for it in items], waves, rejects.rows, stats.decoded)
    assert pools == [2]  # jobs=1 decoded here, jobs=2 in two worker processes
    assert results[1] == results[2]
    assert results[2][3] == 5 and len(results[2][2]) == 3


def test_two_releases_with_the_same_shard_names_keep_all_rows(tmp_path, speech):
    """Rows without usable names get ids from corpus + shard + row, so two corpora whose shards are both
    called train-00000-of-00001.parquet (Kathbath and Shrutilipi, say) do not collide."""
    from lrasr.stages.prepare import run_prepare

    for name, first in (("kathbath_hi", 0), ("shrutilipi_hi", 3)):
        write_shard(tmp_path / name / "hindi" / "train-00000-of-00001.parquet",
                    [{"audio": {"bytes": speech[first + i][0], "path": "audio.wav"}, "text": TEXTS[first + i],
                      "speaker": f"{name}{i}"} for i in range(3)])
    corpora = [{"format": "parquet", "path": str(tmp_path / name / "hindi"), "text_column": "sentence",
                "speaker_column": "client_id"} for name in ("kathbath_hi", "shrutilipi_hi")]
    recipe = Recipe.model_validate({"name": "pq", "language": "en", "workdir": str(tmp_path / "work"),
                                    "corpora": {"labeled": corpora},
                                    "prepare": {"split": {"dev": 0.0, "test": 0.0}}})
    run_prepare(recipe)
    kept = read_manifest(tmp_path / "work" / "prepare" / "train" / "manifest.tsv")
    assert len(kept) == 6 and kept["id"].is_unique


def test_shards_without_a_split_name_and_unknown_split_values(tmp_path, speech):
    """A validated-* shard beside train-/test- shards (Common Voice) is an error, not silently pooled;
    an unknown value in split_column rejects its row with the value named."""
    rows = [{"audio": {"bytes": speech[i][0], "path": f"v{i}.wav"}, "text": TEXTS[i], "speaker": "s"} for i in range(2)]
    for name in ("train", "test", "validated"):
        write_shard(tmp_path / "cv" / f"{name}-00000-of-00001.parquet", rows)
    corpus = LabeledCorpus(format="parquet", path=tmp_path / "cv", text_column="sentence")
    with pytest.raises(LrasrError, match=r"validated-00000-of-00001\.parquet.*gives no split"):
        read_parquet(corpus, RejectLog(), tmp_path / "audio")
    shard = write_shard(tmp_path / "sc" / "all.parquet", rows)
    pq.write_table(pq.read_table(shard).append_column("part", pa.array(["train", "invalidated"])), shard)
    rejects = RejectLog()
    items = read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence", split_column="part"),
                         rejects, tmp_path / "audio2")
    assert [it.split for it in items] == ["train"]
    assert len(rejects.rows) == 1 and "unknown split 'invalidated'" in str(rejects.rows[0])


def test_damaged_row_group_rejects_its_rows_and_the_rest_is_read(tmp_path, speech):
    """Bytes overwritten inside the first row group (the footer intact): that group's rows are rejected
    with the reason, the other groups are read, and input rows = kept + rejected."""
    rows = [{"audio": {"bytes": speech[i][0], "path": f"d{i}.wav"}, "text": TEXTS[i], "speaker": "s"} for i in range(6)]
    shard = write_shard(tmp_path / "d" / "train-00000-of-00001.parquet", rows, row_group_size=2)
    data = bytearray(shard.read_bytes())
    data[20:400] = b"\xff" * 380
    shard.write_bytes(bytes(data))
    rejects = RejectLog()
    items = read_parquet(LabeledCorpus(format="parquet", path=shard, text_column="sentence"), rejects,
                         tmp_path / "audio")
    reasons = [str(r) for r in rejects.rows]
    assert len(items) + len(rejects.rows) == 6 and 1 <= len(rejects.rows) <= 2, reasons
    assert all("row group 0" in r for r in reasons)
    assert sorted(it.line for it in items)[-1] == 6  # the last group is read
