"""What an outside user does on the first day: their own folders, manifests, option values and output
paths. Each test is a problem found by running lrasr the way a user would (session 4)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lrasr.audio.decode import SAMPLE_RATE
from lrasr.decode.transcribe import expand_inputs
from lrasr.errors import LrasrError


def _wav(path: Path, seconds: float = 0.2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(seconds * SAMPLE_RATE), np.float32), SAMPLE_RATE)
    return path


def test_folder_input_names_what_it_skipped_and_keeps_broken_links(tmp_path, capsys):
    """A folder's files with other extensions (.mid, .txt) used to vanish without a word, and a broken
    symbolic link named .wav too: the link is now an input (reported unreadable when transcribed) and
    the skipped files are counted in a warning that names an example and says how to include them."""
    folder = tmp_path / "rec"
    good = _wav(folder / "b.wav")
    _wav(folder / "sub" / "a.WAV")
    (folder / "clip.mid").write_bytes(b"\x00" * 10)
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    os.symlink(tmp_path / "gone.wav", folder / "broken.wav")
    paths = expand_inputs([folder])
    assert paths == [folder / "b.wav", folder / "broken.wav", folder / "sub" / "a.WAV"]
    assert good in paths
    err = " ".join(capsys.readouterr().err.split())
    assert "2 file(s)" in err and "clip.mid" in err and "give them as files" in err


def test_manifest_with_a_path_column_is_transcribable(tmp_path):
    """`lrasr transcribe transcripts.tsv`: a labeled TSV in lrasr's own corpus layout names its audio in a
    `path` column (corpora.labeled[].audio_column's default); it was refused ("lacks column(s) audio")."""
    a = _wav(tmp_path / "audio" / "x.wav")
    tsv = tmp_path / "transcripts.tsv"
    tsv.write_text("path\ttext\naudio/x.wav\tone\n", encoding="utf-8")
    assert expand_inputs([tsv]) == [a]
    other = tmp_path / "other.tsv"
    other.write_text("file\ttext\naudio/x.wav\tone\n", encoding="utf-8")
    with pytest.raises(LrasrError, match=r"no `audio` or `path` column.*found: file, text"):
        expand_inputs([other])


def test_manifest_exported_by_a_spreadsheet_is_transcribable(tmp_path):
    """A TSV saved by a spreadsheet quotes a transcript that holds a tab or a quote; transcribe refused
    the whole manifest ("not a valid manifest"), while evaluate and prepare already read it (session 5)."""
    a = _wav(tmp_path / "audio" / "x.wav")
    b = _wav(tmp_path / "audio" / "y.wav")
    tsv = tmp_path / "export.tsv"
    tsv.write_text('path\ttext\naudio/x.wav\t"one\ttwo"\naudio/y.wav\t"say ""three"""\n', encoding="utf-8")
    assert expand_inputs([tsv]) == [a, b]


def test_missing_manifest_column_message_lists_the_columns_found(tmp_path):
    from lrasr.data.manifest import read_manifest

    tsv = tmp_path / "t.tsv"
    tsv.write_text("path\ttext\nx.wav\tone\n", encoding="utf-8")
    with pytest.raises(LrasrError, match=r"lacks column\(s\) id, audio \(it has: path, text\)"):
        read_manifest(tsv, required=("id", "audio", "text"))


def test_subtitle_output_ending_in_a_slash_is_a_folder(tmp_path):
    """`-f srt -o subs/` with one input wrote a FILE named `subs` (the slash was lost on the way)."""
    from lrasr.decode.output import write_results
    from lrasr.decode.transcribe import FileResult
    from lrasr.decode.types import Hypothesis

    results = [FileResult(Path("/x/talk.wav"), Hypothesis(""))]
    written = write_results(results, "srt", str(tmp_path / "subs") + "/")
    assert written == [tmp_path / "subs" / "talk.srt"] and (tmp_path / "subs").is_dir()
    written = write_results(results, "txt", str(tmp_path / "texts") + os.sep)
    assert written == [tmp_path / "texts" / "transcripts.txt"]


@pytest.mark.parametrize("option", [["--chunk-seconds", "0"], ["--beam-width", "0"]])
def test_transcribe_refuses_impossible_option_values_in_one_line(tmp_path, option):
    """--chunk-seconds 0 and --beam-width 0 ended in a traceback (ValueError from argmin / max)."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    wav = _wav(tmp_path / "a.wav")
    res = CliRunner().invoke(app, ["transcribe", "-m", str(tmp_path / "nomodel"), str(wav), *option])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and option[0] in res.output


def test_build_transcriber_validates_decode_overrides(tmp_path):
    """The library path (transcribe_files(..., chunk_seconds=0)) skipped DecodeConfig's checks."""
    from lrasr.decode.transcribe import build_transcriber

    with pytest.raises(LrasrError, match="chunk_seconds"):
        build_transcriber(tmp_path / "nomodel", chunk_seconds=0.0)


def test_evaluate_accepts_output_like_every_other_command(tmp_path):
    """README and the other commands say --output; evaluate only knew --out ("No such option")."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    res = CliRunner().invoke(app, ["evaluate", "-m", str(tmp_path / "nomodel"), str(tmp_path / "m.tsv"),
                                   "--output", str(tmp_path / "rep")])
    assert "No such option" not in res.output
    assert res.exit_code == 2


def test_recipe_validate_catches_what_only_a_later_stage_used_to_find(tmp_path):
    """`lrasr recipe validate` said "ok" for an unknown model preset, a misspelt model field and a language
    with no known script; the mistake then surfaced only when that stage ran (pretrain after prepare)."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nlanguage: xx\nworkdir: w\npretrain: {model: huge}\n"
                      "finetune: {model: {preset: tiny, dropot: 0.1}}\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["recipe", "validate", str(recipe)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "pretrain.model: unknown model preset 'huge'" in out
    assert "finetune.model:" in out and "dropot" in out
    assert "language: no default script for language 'xx'" in out
    good = tmp_path / "g.yaml"
    # (a pretrain section needs audio to pretrain on: unlabeled recordings or include_labeled)
    good.write_text("name: g\nlanguage: ml\nworkdir: w\npretrain: {model: tiny, include_labeled: true}\n",
                    encoding="utf-8")
    res = CliRunner().invoke(app, ["recipe", "validate", str(good)])
    assert res.exit_code == 0 and "ok" in res.output


def test_mp3_read_in_blocks_prints_no_decoder_noise(tmp_path, capfd):
    """A valid 64 kb/s MP3 (ffmpeg/LAME, 30 s of noise) read block by block, as transcribe and prepare do,
    made libmpg123 print "part2_3_length ... too large" lines to stderr (522 of them for a 27-minute talk)
    although the samples equal a whole-file read. Those lines are held back; other stderr output is not."""
    import shutil
    import subprocess

    from lrasr.audio.decode import iter_blocks, load

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    mp3 = tmp_path / "noise.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=d=30:c=pink:r=16000:a=0.3",
                    "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k", str(mp3)], check=True)
    capfd.readouterr()
    blocks = np.concatenate(list(iter_blocks(mp3, block_seconds=7.0)))
    whole = load(mp3)
    err = capfd.readouterr().err
    assert "part2_3_length" not in err and "libmpg123" not in err
    assert blocks.shape == whole.shape and np.abs(blocks - whole).max() < 1e-4
    from lrasr.audio.decode import _quiet_mpg123

    with _quiet_mpg123():
        os.write(2, b"[src/libmpg123/layer3.c:1] error: noise\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"


def test_stage_folder_given_as_model_points_to_its_model_folder(tmp_path):
    """`-m <workdir>/finetune` (the stage folder) said only "not a model folder (no config.json)"."""
    from lrasr.decode.acoustic import load_model

    (tmp_path / "finetune" / "model").mkdir(parents=True)
    (tmp_path / "finetune" / "model" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LrasrError, match=r"did you mean .*finetune/model\?"):
        load_model(tmp_path / "finetune", "cpu")


def test_file_names_that_are_not_utf8_are_read_and_written(tmp_path):
    """A recording whose name is not valid UTF-8 (latin-1 names from an old archive) stopped the whole
    transcription with a UnicodeEncodeError traceback inside soundfile; and a transcript line naming it
    could not be written as UTF-8."""
    from lrasr.audio.decode import iter_blocks, load, probe
    from lrasr.decode.formats import WRITERS
    from lrasr.decode.types import Hypothesis

    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    os.rename(_wav(tmp_path / "plain.wav", 0.1), raw)
    path = Path(os.fsdecode(raw))
    assert probe(path).num_frames == 1600 and load(path).shape == (1600,)
    assert sum(b.size for b in iter_blocks(path)) == 1600
    for fmt, writer in WRITERS.items():
        text = writer([(str(path), Hypothesis(""))])
        text.encode("utf-8")  # raises on a lone surrogate
        if fmt in ("tsv", "jsonl"):
            assert "caf\ufffd.wav" in text


def test_prepare_rejects_a_recording_whose_name_is_not_utf8(tmp_path):
    """`lrasr prepare` on a folder holding such a name died with a UnicodeEncodeError traceback (record
    key, then UTF-8 manifests); now that file is a rejected row that says to rename it, and the others go on."""
    from lrasr.recipe import load_recipe
    from lrasr.stages.prepare_unlabeled import list_inputs

    folder = tmp_path / "rec"
    ok = _wav(folder / "ok.wav")
    os.rename(_wav(folder / "x.wav"), os.path.join(os.fsencode(folder), b"caf\xe9.wav"))
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: r\nlanguage: en\nworkdir: {tmp_path / 'w'}\ncorpora:\n  unlabeled:\n"
                           f"    - path: {folder}\n", encoding="utf-8")
    inputs, rejects, _ = list_inputs(load_recipe(recipe_file))
    assert inputs == [ok]
    [row] = rejects.rows
    assert row["source"].endswith("caf\ufffd.wav") and "not valid UTF-8" in row["reason"]
    row["source"].encode("utf-8")


def test_run_fingerprint_survives_broken_links_and_odd_names(tmp_path):
    """`lrasr run` (even --dry-run) on a corpus folder holding a broken link ended in a FileNotFoundError
    traceback while fingerprinting its inputs; prepare itself reports such a file as a rejected row."""
    from lrasr.fingerprint import HashCache

    folder = tmp_path / "rec"
    _wav(folder / "ok.wav")
    os.symlink(tmp_path / "gone.wav", folder / "broken.wav")
    os.rename(_wav(folder / "x.wav"), os.path.join(os.fsencode(folder), b"caf\xe9.wav"))
    cache = HashCache(tmp_path / "cache.json")
    first = cache.digest(folder)
    cache.save()
    assert HashCache(tmp_path / "cache.json").digest(folder) == first
    (folder / "broken.wav").unlink()
    _wav(folder / "broken.wav")  # the link's target appears: the inputs changed
    assert HashCache(tmp_path / "cache.json").digest(folder) != first


def test_jsonl_rows_say_why_a_transcript_is_empty(tmp_path):
    """An empty jsonl row looked the same for a silent file, a missing one and an undecodable one; the
    reason went only to the terminal. Rows of files that failed now carry it in an `error` key."""
    import json

    from lrasr.decode.output import write_results
    from lrasr.decode.transcribe import FileResult
    from lrasr.decode.types import Hypothesis

    results = [FileResult(Path("a.wav"), Hypothesis("ok")),
               FileResult(Path("b.wav"), Hypothesis(""), error="b.wav: file not found")]
    [out] = write_results(results, "jsonl", tmp_path / "t.jsonl")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert "error" not in rows[0] and rows[1]["error"] == "b.wav: file not found"


def test_output_never_overwrites_a_recording(tmp_path):
    """`lrasr transcribe -m M -o talk1.wav talk2.wav` (a forgotten output name) replaced the recording
    talk1.wav with a transcript. An --output that is an existing audio file is refused before any work."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    talk1, talk2 = _wav(tmp_path / "talk1.wav"), _wav(tmp_path / "talk2.wav")
    before = talk1.read_bytes()
    res = CliRunner().invoke(app, ["transcribe", "-m", str(tmp_path / "nomodel"), "-o", str(talk1), str(talk2)])
    assert res.exit_code == 2 and "audio" in res.output and "overwrite" in res.output, res.output
    assert talk1.read_bytes() == before


def test_transcribe_exits_nonzero_when_no_input_could_be_read(tmp_path):
    """`lrasr transcribe -m M typo.wav` printed a warning, an empty line and exited 0, so a script could
    not tell; like `lrasr prepare`, it now exits non-zero when nothing usable was produced."""
    from typer.testing import CliRunner

    from lrasr.cli import app
    from tests.test_transcribe import make_model_dir

    model = make_model_dir(tmp_path / "m", ["ഒന്ന് രണ്ട്"])
    out = tmp_path / "t.txt"
    res = CliRunner().invoke(app, ["transcribe", "-m", str(model), "--device", "cpu", "-o", str(out),
                                   str(tmp_path / "typo.wav")])
    assert res.exit_code == 1, res.output
    assert "no input could be transcribed" in " ".join(res.output.split())
    assert out.read_text(encoding="utf-8") == "\n"  # the output still accounts for the input


def test_folder_input_follows_linked_subfolders_once(tmp_path):
    """A linked subfolder (recordings on another disk) was not entered, and its audio vanished without a
    word; `lrasr prepare` does follow links. A link back to the folder itself must not loop."""
    folder = tmp_path / "rec"
    a = _wav(folder / "a.wav")
    b = _wav(tmp_path / "elsewhere" / "b.wav")
    os.symlink(tmp_path / "elsewhere", folder / "disk2")
    os.symlink(folder, folder / "again")
    assert expand_inputs([folder]) == [a, folder / "disk2" / b.name]


def test_lm_build_unknown_language_names_the_option(tmp_path):
    """`lrasr lm build --language xx` told the user to set prepare.text.script, a recipe key that this
    command (no recipe) does not read."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    text = tmp_path / "t.txt"
    text.write_text("one two\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["lm", "build", str(text), "-o", str(tmp_path / "lm"), "--language", "xx"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "--language xx" in out and "prepare.text" not in out, out


def test_evaluate_reads_a_labeled_corpus_tsv(tmp_path):
    """`lrasr evaluate -m M transcripts.tsv` on the user's own labeled TSV (path + text, as in a recipe's
    tsv corpus) was refused: "manifest lacks column(s) id, audio". `path` now names the audio and a
    missing id is the audio file's stem (numbered when two stems are the same)."""
    from lrasr.data.manifest import read_labeled_manifest
    from lrasr.evaluate import evaluate_model
    from tests.test_transcribe import make_model_dir

    _wav(tmp_path / "a" / "x.wav", 0.5)
    _wav(tmp_path / "b" / "x.wav", 0.5)
    tsv = tmp_path / "transcripts.tsv"
    tsv.write_text("path\ttext\na/x.wav\tഒന്ന്\nb/x.wav\tരണ്ട്\n", encoding="utf-8")
    frame = read_labeled_manifest(tsv)
    assert list(frame["id"]) == ["x", "x-2"] and list(frame["audio"]) == ["a/x.wav", "b/x.wav"]
    model = make_model_dir(tmp_path / "m", ["ഒന്ന് രണ്ട്"])
    report = evaluate_model(model, tsv, tmp_path / "rep", device="cpu")
    assert report.utterances == 2


@pytest.mark.parametrize("ext,args", [("wma", ["-c:a", "wmav2"]), ("mka", ["-c:a", "libvorbis"]),
                                      ("3gp", ["-c:a", "aac", "-ar", "16000"]), ("oga", ["-c:a", "libvorbis"]),
                                      ("au", ["-c:a", "pcm_s16be"])])
def test_folders_pick_up_phone_and_windows_formats(tmp_path, ext, args):
    """.wma, .mka, .3gp (phone recorders), .oga and .au decode fine when named; a folder of them used to be
    skipped with a warning by transcribe and by prepare's unlabeled corpora. Now every folder search uses
    the one list in lrasr.recipe.AUDIO_EXTENSIONS, and what it finds decodes to the right length."""
    import shutil
    import subprocess

    from lrasr.audio.decode import load
    from lrasr.recipe import UnlabeledCorpus

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (make test installs it)")
    wav = _wav(tmp_path / "src.wav", seconds=1.0)
    folder = tmp_path / "rec"
    folder.mkdir()
    target = folder / f"talk.{ext}"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), *args, str(target)],
                   check=True)
    assert expand_inputs([folder]) == [target]
    assert ext in UnlabeledCorpus(path=folder).extensions
    assert abs(load(target).size - SAMPLE_RATE) < 0.1 * SAMPLE_RATE


def test_transcribe_says_when_a_wav_is_cut_off(tmp_path):
    """A WAV cut off after its header (a recorder that died) decodes without an error to what is left;
    transcribe now says so instead of silently writing a transcript of half a recording."""
    from typer.testing import CliRunner

    from lrasr.cli import app
    from tests.test_transcribe import make_model_dir

    model = make_model_dir(tmp_path / "m", ["ഒന്ന് രണ്ട്"])
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    full = tmp_path / "full.wav"
    sf.write(str(full), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    res = CliRunner().invoke(app, ["transcribe", "-m", str(model), "--device", "cpu", "-o", str(tmp_path / "t.txt"),
                                   str(full), str(cut)])
    said = " ".join(res.output.split())
    assert "the header promises 2.0 s but the file holds 1.0 s" in said and "cut.wav" in said
    assert "full.wav: truncated" not in said


def test_segment_names_keep_indic_file_names_whole():
    """Segment folders and ids come from the recording's name. Indic vowel signs and viramas are
    combining marks, which a \\w pattern drops: 'മലയാളം' came out as 'മലയ_ള'. Marks, digits, letters
    and zero-width joiners now survive (NFC); spaces and punctuation still become one '_'."""
    from lrasr.vad.recording import safe_stem

    assert safe_stem(Path("മലയാളം_സംഭാഷണം.wav")) == "മലയാളം_സംഭാഷണം"
    assert safe_stem(Path("बातचीत रिकॉर्डिंग (2).mp3")) == "बातचीत_रिकॉर्डिंग_2"
    assert safe_stem(Path("ന\u0d4d\u200dറെ.wav")) == "ന\u0d4d\u200dറെ"
    assert safe_stem(Path("normal-file_01.wav")) == "normal-file_01"  # ASCII names as before
    assert safe_stem(Path("a  b!!c.wav")) == "a_b_c" and safe_stem(Path("....wav")) == "audio"
    decomposed = "ക\u0d46\u0d3e"  # KA + E + AA: NFC composes the two vowel signs into one (U+0D4A)
    assert safe_stem(Path(decomposed + ".wav")) == "\u0d15\u0d4a"


def test_lm_build_from_a_manifest_reads_its_text_column(tmp_path):
    """`lrasr lm build prepare/train/manifest.tsv` read the table as plain text: its header, audio paths and
    speaker ids became LM words (733 distinct words instead of 356 in a user's run, session 5)."""
    from lrasr.decode.lm import arpa_unigrams, build_lm, read_text_files

    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("id\taudio\tduration\ttext\tspeaker\n"
                        "u1\taudio/u1.flac\t1.5\tഒന്ന് രണ്ട്\tspk9a\n"
                        "u2\taudio/u2.flac\t2.0\tരണ്ട് മൂന്ന്\tspk9b\n", encoding="utf-8")
    plain = tmp_path / "more.txt"
    plain.write_text("നാല് ഒന്ന്\n", encoding="utf-8")
    result = build_lm(read_text_files([manifest, plain]), tmp_path / "lm", order=2)
    words = set(arpa_unigrams(tmp_path / "lm" / "lm.arpa")) - {"<s>", "</s>", "<unk>"}
    assert words == {"ഒന്ന്", "രണ്ട്", "മൂന്ന്", "നാല്"}
    assert result.summary()["sentences"] == 3


def test_labeled_tsv_speaker_id_column_gives_per_speaker_scores(tmp_path):
    """`lrasr evaluate` on a user's TSV whose speakers are in `speaker_id` (Common Voice's, SMC's name)
    scored every utterance as speaker '-' (session 5)."""
    from lrasr.data.manifest import read_labeled_manifest

    tsv = tmp_path / "t.tsv"
    tsv.write_text("path\tspeaker_id\ttext\na.wav\tspk1\tone\nb.wav\tspk2\ttwo\n", encoding="utf-8")
    assert list(read_labeled_manifest(tsv)["speaker"]) == ["spk1", "spk2"]
    both = tmp_path / "both.tsv"
    both.write_text("path\tspeaker\tspeaker_id\ttext\na.wav\tS\tspk1\tone\n", encoding="utf-8")
    assert list(read_labeled_manifest(both)["speaker"]) == ["S"]  # an explicit speaker column wins


def test_more_loader_workers_than_cores_are_capped_without_torch_warnings(tmp_path):
    """`num_workers: 4` (the language recipes' value) on a 2-core machine printed torch's multi-line
    DataLoader warning every epoch (session 5); the loader now uses at most the usable cores, same batches."""
    import warnings

    import torch
    from test_train_support import make_manifest

    from lrasr.train.batching import AudioDataset, iterate_groups, plan_epoch, usable_workers

    cores = usable_workers(1 << 10)
    assert cores >= 1 and usable_workers(0) == 0 and usable_workers(1) == 1
    data = AudioDataset([make_manifest(tmp_path, count=4, min_s=0.4, max_s=0.8)])
    plan = plan_epoch(data, 0, 2.0, 2.0, 1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "This DataLoader will create N worker processes" warning
        many = [b for _, g in iterate_groups(data, plan, 0, 1, num_workers=cores + 3) for b in g]
    plain = [b for _, g in iterate_groups(data, plan, 0, 1) for b in g]
    assert [b.ids for b in many] == [b.ids for b in plain]
    assert all(torch.equal(a.waveforms, b.waveforms) for a, b in zip(many, plain))


def test_recipe_validate_checks_every_file_given(tmp_path):
    """`lrasr recipe validate a.yaml b.yaml c.yaml` stopped at the first bad file: the others' problems (or
    their being fine) stayed unknown until it was fixed (session 5). Exit code 2 when any is bad."""
    from typer.testing import CliRunner

    from lrasr.cli import app

    good = "name: g\nlanguage: ml\nworkdir: w\n"
    (tmp_path / "a.yaml").write_text(good.replace("language: ml", "langauge: ml"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(good, encoding="utf-8")
    (tmp_path / "c.yaml").write_text(good + "lm: {order: x}\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["recipe", "validate", *(str(tmp_path / n) for n in ("a.yaml", "b.yaml", "c.yaml"))])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, out
    assert "a.yaml: langauge: unknown key" in out and "ok" in out and "b.yaml" in out and "lm.order" in out
    assert "2 of 3 recipes have problems" in out


def test_lm_build_from_a_common_voice_table_reads_its_sentences(tmp_path):
    """`lrasr lm build validated.tsv` (Common Voice names its transcript column `sentence`) read the table as
    plain text: its header, client ids, clip names and vote counts became LM words. A .tsv table with
    neither a text nor a sentence column is refused, naming its columns (review V)."""
    from lrasr.decode.lm import read_text_files
    from lrasr.errors import LrasrError

    cv = tmp_path / "validated.tsv"
    cv.write_text("client_id\tpath\tsentence\tup_votes\n"
                  "abc123\tcommon_voice_te_1.mp3\tఒకటి రెండు\t2\n", encoding="utf-8")
    assert list(read_text_files([cv])) == ["ఒకటి రెండు\n"]
    other = tmp_path / "other.tsv"
    other.write_text("path\ttranscript\na.wav\tఒకటి\n", encoding="utf-8")
    with pytest.raises(LrasrError, match=r"other\.tsv.*path, transcript"):
        list(read_text_files([other]))
    single = tmp_path / "lines.tsv"  # one column: sentences, one a line, whatever the extension
    single.write_text("ఒకటి రెండు\nమూడు\n", encoding="utf-8")
    assert list(read_text_files([single])) == ["ఒకటి రెండు\n", "మూడు\n"]


def test_an_empty_tsv_is_a_one_line_error(tmp_path):
    """An empty (0-byte or blank) .tsv given to transcribe, evaluate or lm build as a manifest ended in pandas'
    EmptyDataError traceback (review V): now an LrasrError naming the file."""
    from lrasr.data.manifest import read_labeled_manifest, read_user_tsv
    from lrasr.errors import LrasrError

    for content in (b"", b"\n", b"\r\n\r\n"):
        path = tmp_path / "empty.tsv"
        path.write_bytes(content)
        for read in (read_user_tsv, read_labeled_manifest):
            with pytest.raises(LrasrError, match=r"empty\.tsv.*is empty: no header line"):
                read(path)


def test_a_repeated_column_reads_the_same_quoted_or_not(tmp_path):
    """A user's TSV with two columns of one name: pandas numbers the second (text.1), but the spreadsheet
    reader (taken when a field starts with a quote) kept both names, so frame["text"] was a table and
    evaluate/transcribe failed with a traceback (review V). Both readers now give the same columns."""
    from lrasr.data.manifest import read_labeled_manifest

    plain, quoted = tmp_path / "plain.tsv", tmp_path / "quoted.tsv"
    plain.write_text("path\ttext\ttext\na.wav\thi there\tx\n", encoding="utf-8")
    quoted.write_text('path\ttext\ttext\na.wav\t"hi\tthere"\tx\n', encoding="utf-8")
    for path, text in ((plain, "hi there"), (quoted, "hi\tthere")):
        frame = read_labeled_manifest(path)
        assert list(frame.columns) == ["id", "audio", "text", "text.1"]
        assert frame["text"].tolist() == [text] and frame["text.1"].tolist() == ["x"]
