"""Each card's convert commands, run on a miniature of the corpus as its publisher lays it out, give what
the card's layout check accepts and what its ingest format reads.

The miniatures follow the sources named on each card (file names, index formats, folder nesting); the
audio files are empty because ingest only reads the index files. A card's shell commands are its
``convert`` lines that start with ``$ ``; they run with bash in the folder the card names.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from lrasr.corpora import layout_mismatch, list_cards, load_card
from lrasr.data.ingest import ingest_corpus
from lrasr.recipe import LabeledCorpus


def commands(card_name: str) -> list[str]:
    return [line.strip()[2:] for line in load_card(card_name).ingest.convert.splitlines()
            if line.strip().startswith("$ ")]


def run_commands(card_name: str, folder: Path) -> None:
    cmds = commands(card_name)
    assert cmds, f"card {card_name} has no '$ ' command lines"
    for cmd in cmds:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, f"{card_name}: `{cmd}` failed: {done.stderr}"


def read(card_name: str, path: Path, missing: frozenset[str] = frozenset()):
    """Items by id; every audio path but those of the ``missing`` ids must be an extracted file."""
    card = load_card(card_name)
    corpus = LabeledCorpus(format=card.ingest.format, path=path, card=card_name, **card.ingest.options)
    items, rejects = ingest_corpus(corpus)
    assert len(rejects) == 0, rejects.rows
    for item in items:
        assert Path(item.audio).is_file() != (item.id in missing), f"{card_name}: {item.id} -> {item.audio}"
    return {item.id: item for item in items}


# ------------------------------------------------------------------------------ miniature corpora
def openslr_archive(root: Path) -> Path:
    """An unzipped ml_in_female.zip: line_index.tsv (no header, id + text; one line with the extra empty
    middle field the Hugging Face loader strips) and the wavs at the top level."""
    root.mkdir()
    (root / "line_index.tsv").write_text("mlf_00053_00012345\tഒന്ന് രണ്ട്\nmlf_00053_00067890\t\tമൂന്ന്\n",
                                         encoding="utf-8")
    for stem in ("mlf_00053_00012345", "mlf_00053_00067890"):
        (root / f"{stem}.wav").write_bytes(b"")
    return root


def fleurs_config(root: Path) -> Path:
    """data/ml_in/: train.tsv (no header, 7 columns) and audio/train.tar.gz holding train/<file>.wav."""
    (root / "audio").mkdir(parents=True)
    rows = [("1001", "10433.wav", "Raw, text one.", "raw text one", "x", "160000", "FEMALE"),
            ("1002", "10434.wav", "Raw text two!", "raw text two", "x", "96000", "MALE")]
    (root / "train.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    with tarfile.open(root / "audio" / "train.tar.gz", "w:gz") as tar:
        for r in rows:
            info = tarfile.TarInfo(f"train/{r[1]}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"RIFF"))
    return root


def mucs_split(root: Path) -> Path:
    """Odia/train/: audio/<id>.wav and transcription.txt with '<id> <text>' lines."""
    (root / "audio").mkdir(parents=True)
    (root / "transcription.txt").write_text("0001_001 ପ୍ରଥମ ବାକ୍ୟ\n0001_002 ଦ୍ୱିତୀୟ ବାକ୍ୟ\n", encoding="utf-8")
    for stem in ("0001_001", "0001_002"):
        (root / "audio" / f"{stem}.wav").write_bytes(b"")
    return root


def respin_set(root: Path) -> Path:
    """IISc_RESPIN_train_hi_small/: D<n>/<speaker>/ with wavs and one '<id><TAB><text>' txt per speaker
    (the first without a final newline, so the lines of two files must not run together)."""
    speakers = {("D1", "40002"): ["IISc_RESPIN_hi_D1_40002_251001_M_AGRI_402372_40000001",
                                  "IISc_RESPIN_hi_D1_40002_251001_M_BANK_401495_40000002"],
                ("D2", "40107"): ["IISc_RESPIN_hi_D2_40107_NA_F_AGRI_400729_40000003"]}
    for (dialect, spk), utts in speakers.items():
        folder = root / dialect / spk
        folder.mkdir(parents=True)
        for u in utts:
            (folder / f"{u}.wav").write_bytes(b"")
        lines = "\n".join(f"{u}\tवाक्य {i}" for i, u in enumerate(utts))
        (folder / f"IISc_RESPIN_hi_{dialect}_{spk}.txt").write_text(
            lines + ("" if dialect == "D1" else "\n"), encoding="utf-8")
    (root / "meta_train_hi_small.json").write_text("{}", encoding="utf-8")
    return root


def openslr53_folder(root: Path) -> Path:
    """asr_bengali/ after unpacking the zips: utt_spk_text.tsv (file id, speaker, text; one line with a double
    tab, which the Hugging Face loader also accepts; one line whose flac is absent) and data/<2 chars>/*.flac."""
    rows = [("0a1b2c3d4e", "f00dcafe", "বাংলা এক"), ("9f8e7d6c5b", "beefbeef", "বাংলা দুই"),
            ("0a77777777", "f00dcafe", "বাংলা তিন")]
    root.mkdir()
    (root / "utt_spk_text.tsv").write_text(
        f"{rows[0][0]}\t{rows[0][1]}\t{rows[0][2]}\n{rows[1][0]}\t\t{rows[1][1]}\t{rows[1][2]}\n"
        f"{rows[2][0]}\t{rows[2][1]}\t{rows[2][2]}\n", encoding="utf-8")
    for file_id, _, _ in rows[:2]:
        (root / "data" / file_id[:2]).mkdir(parents=True, exist_ok=True)
        (root / "data" / file_id[:2] / f"{file_id}.flac").write_bytes(b"")
    return root


# card -> (build the published layout, where the commands run, the recipe path relative to it)
CASES = {
    "openslr63": (openslr_archive, "transcripts.tsv"),
    "openslr_google_indic": (openslr_archive, "transcripts.tsv"),
    "fleurs": (fleurs_config, "lrasr_train.tsv"),
    "mucs2021": (mucs_split, "."),
    "respin": (respin_set, "."),
    "openslr53": (openslr53_folder, "transcripts.tsv"),
}


def test_every_card_with_commands_is_exercised():
    with_commands = {c.name for c in list_cards() if any(l.strip().startswith("$ ")
                                                          for l in c.ingest.convert.splitlines())}
    assert with_commands == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_commands_give_what_the_layout_and_format_expect(name, tmp_path):
    build, target = CASES[name]
    folder = build(tmp_path / "corpus")
    path = (folder / target).resolve()
    card = load_card(name)
    if card.layout.path_is == "dir":  # before converting, the check names what the convert step writes
        why = layout_mismatch(card, path)
        assert why is not None and "wav.scp" in why and "text" in why
    run_commands(name, folder)
    assert layout_mismatch(card, path) is None
    items = read(name, path, missing=frozenset({"0a77777777"}) if name == "openslr53" else frozenset())
    if name == "openslr53":
        assert {i: (it.speaker, it.text) for i, it in items.items()} == {
            "0a1b2c3d4e": ("f00dcafe", "বাংলা এক"), "9f8e7d6c5b": ("beefbeef", "বাংলা দুই"),
            "0a77777777": ("f00dcafe", "বাংলা তিন")}
    elif name.startswith("openslr"):
        assert {i: it.text for i, it in items.items()} == {"mlf_00053_00012345": "ഒന്ന് രണ്ട്",
                                                          "mlf_00053_00067890": "മൂന്ന്"}
    elif name == "fleurs":
        assert sorted(it.text for it in items.values()) == ["raw text one", "raw text two"]
        assert sorted(Path(it.audio).name for it in items.values()) == ["10433.wav", "10434.wav"]
    elif name == "mucs2021":
        assert items["0001_002"].text == "ଦ୍ୱିତୀୟ ବାକ୍ୟ"
        assert Path(items["0001_002"].audio).name == "0001_002.wav"
    elif name == "respin":
        assert len(items) == 3
        assert items["IISc_RESPIN_hi_D1_40002_251001_M_BANK_401495_40000002"].text == "वाक्य 1"
        assert items["IISc_RESPIN_hi_D2_40107_NA_F_AGRI_400729_40000003"].speaker == "40107"
        assert items["IISc_RESPIN_hi_D1_40002_251001_M_AGRI_402372_40000001"].speaker == "40002"


def test_layout_check_rejects_the_unconverted_file_cards(tmp_path):
    """A path to the raw index (or to nothing) is refused with the card's description, not read wrongly."""
    folder = openslr_archive(tmp_path / "ml_in_female")
    assert "expected a file" in layout_mismatch(load_card("openslr63"), folder)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "transcripts.tsv").write_text("path\ttext\n")
    why = layout_mismatch(load_card("openslr63"), tmp_path / "stray" / "transcripts.tsv")
    assert "line_index.tsv" in why and "*.wav" in why
    why = layout_mismatch(load_card("fleurs"), tmp_path / "stray" / "transcripts.tsv")
    assert "*/*.wav" in why


# ------------------------------------------------------------------------------ parquet releases
# card -> (language folder, {shard file name: [(text, speaker)]}, audio as "struct" or "binary", speaker column)
# Shard names follow the Hugging Face listings named on the cards; the audio column holds real (espeak) audio because
# the parquet format decodes every row. Shrutilipi's audio_filepath is "bytes" per third-party code, so its
# miniature uses a plain binary column (lrasr reads both kinds).
PARQUET_CASES = {
    "kathbath": ("hindi", {"train-00000-of-00002.parquet": [("नमस्ते दुनिया", "k1")],
                           "train-00001-of-00002.parquet": [("एक दो तीन", "k2")],
                           "valid-00000-of-00001.parquet": [("सुप्रभात", "k3")]}, "struct", None),
    "indicvoices": ("gujarati", {"train-00000-of-00001.parquet": [("નમસ્તે", "iv1"), ("એક બે", "iv2")],
                                 "valid-00000-of-00001.parquet": [("ત્રણ", "iv3")]}, "struct", "speaker_id"),
    "shrutilipi": ("kannada", {"train-00000-of-00041.parquet": [("ನಮಸ್ಕಾರ", None), ("ಒಂದು ಎರಡು", None)],
                               "train-00001-of-00041.parquet": [("ಮೂರು", None)]}, "binary", None),
}


def parquet_release(root: Path, name: str) -> Path:
    """<root>/<language>/ with the card's shards; columns named as the card's options say."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import espeak

    language, shards, kind, speaker_col = PARQUET_CASES[name]
    options = load_card(name).ingest.options
    folder = root / language
    folder.mkdir(parents=True)
    (root / "README.md").write_text("top of the release: one folder per language\n")
    n = 0
    for shard, rows in shards.items():
        clips = []
        for text, _ in rows:
            wav = espeak("one two", root / f"clip{n}.wav", voice="en", speed=260)
            clips.append(wav.read_bytes())
            wav.unlink()
            n += 1
        if kind == "struct":
            audio = pa.array([{"bytes": b, "path": f"{i}.wav"} for i, b in enumerate(clips)],
                             type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        else:
            audio = pa.array(clips, type=pa.binary())
        columns = {options["audio_column"]: audio, options["text_column"]: pa.array([t for t, _ in rows])}
        if speaker_col:
            columns[speaker_col] = pa.array([s for _, s in rows])
        pq.write_table(pa.table(columns), folder / shard)
    return folder


@pytest.mark.parametrize("name", sorted(PARQUET_CASES))
def test_parquet_cards_read_a_language_folder_of_the_release(name, tmp_path):
    card = load_card(name)
    assert card.ingest.format == "parquet" and not commands(name), "the hub release is read as is"
    folder = parquet_release(tmp_path / "release", name)
    assert layout_mismatch(card, folder) is None
    # the release's top folder (all languages) is refused, naming the shards a language folder holds
    assert "train-*.parquet" in layout_mismatch(card, folder.parent)
    corpus = LabeledCorpus(format="parquet", path=folder, card=name, **card.ingest.options)
    items, rejects = ingest_corpus(corpus, audio_dir=tmp_path / "audio")
    assert len(rejects) == 0, rejects.rows
    _, shards, _, speaker_col = PARQUET_CASES[name]
    expected = {text: ("dev" if shard.startswith("valid-") else "train", speaker)
                for shard, rows in shards.items() for text, speaker in rows}
    got = {it.text: (it.split, it.speaker) for it in items}
    if name == "shrutilipi":  # train shards only: nothing is pre-assigned, the ratio split places every row
        expected = {t: (None, None) for t in expected}
    elif not speaker_col:  # Kathbath: no verified speaker column on the card, so none is read
        expected = {t: (split, None) for t, (split, _) in expected.items()}
    assert got == expected
    assert all(Path(it.audio).is_file() and Path(it.audio).suffix == ".flac" for it in items)
