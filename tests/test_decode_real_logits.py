"""Beam search with a KenLM model on a REAL model's logits scores better than greedy decoding.

The constructed-log-probability tests (test_decode_beam.py) show the decoder can fix a spelling; this
module shows it on what a trained acoustic model really emits. A module fixture synthesizes a small
single-voice Malayalam corpus with espeak-ng (12 words, training sentences of 1-4 words), trains the
narrow ``tiny`` model from scratch with ``run_finetune`` just long enough that greedy decoding of
held-out sentences (new 3-word combinations of the same words, never trained on) is partly right but
misspells words, builds an order-3 KenLM from text covering those word sequences, and decodes the
model's held-out logits greedily and with beam search + LM.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import espeak
from lrasr.audio.decode import SAMPLE_RATE, load
from lrasr.data.manifest import write_manifest

pytest.importorskip("kenlm")
pytest.importorskip("pyctcdecode")

WORDS = "അമ്മ ആന മരം പുഴ കടൽ മഴ വീട് പൂച്ച നായ കുട്ടി പാൽ ചായ".split()
TRAIN_SENTENCES, HELD_OUT = 100, 12
# the narrow tiny variant of test_finetune: 500 updates take ~40 s on one CPU thread
MODEL = {"preset": "tiny", "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
         "embed_dim": 64, "ffn_dim": 128, "pos_conv_kernel": 16, "pos_conv_groups": 4, "final_dim": 32}
# at 500 updates greedy CER on the held-out sentences is 0.17 (WER 0.50; 400 or 650 updates: CER
# 0.22-0.24, and the LM still more than halves the WER): words are recognisable but misspelled, the
# situation an LM is for
STEPS = 500


def _sentences(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training sentences of 1-4 words, held-out 3-word sentences not among them)."""
    rng = random.Random(seed)
    held = []
    while len(held) < HELD_OUT:
        s = " ".join(rng.sample(WORDS, 3))
        if s not in held:
            held.append(s)
    train: list[str] = []
    while len(train) < TRAIN_SENTENCES:
        s = " ".join(rng.sample(WORDS, rng.choice([1, 2, 2, 3, 3, 4])))
        if s not in held and s not in train:
            train.append(s)
    return train, held


def _speak(folder: Path, name: str, text: str) -> tuple[Path, np.ndarray]:
    raw = espeak(text, folder / f"{name}.raw.wav", voice="ml", speed=150, pitch=50)
    wave = load(raw, SAMPLE_RATE)
    raw.unlink()
    path = folder / f"{name}.wav"
    sf.write(path, wave, SAMPLE_RATE)
    return path, wave


@pytest.fixture(scope="module")
def real_logits(tmp_path_factory):
    """(references, greedy-ready log-probs [F, V] per held-out utterance, tokenizer, LM dir, normalizer)."""
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.decode.lm import KenlmMissing, build_lm, find_kenlm_tool
    from lrasr.recipe import TextConfig, TokenizerConfig, load_recipe
    from lrasr.stages.finetune import run_finetune
    from lrasr.text.normalize import Normalizer
    from lrasr.text.tokenizer import train_tokenizer

    try:
        find_kenlm_tool("lmplz"), find_kenlm_tool("build_binary")
    except KenlmMissing as exc:
        pytest.skip(f"KenLM binaries missing: {exc}")
    root = tmp_path_factory.mktemp("real_logits")
    audio = root / "audio"
    audio.mkdir()
    normalizer = Normalizer("ml", TextConfig())
    train, held = _sentences()
    train = [normalizer.normalize(t) for t in train]
    held = [normalizer.normalize(t) for t in held]
    assert {w for t in held for w in t.split()} <= {w for t in train for w in t.split()}

    rows = []
    for k, text in enumerate(train):
        path, wave = _speak(audio, f"t{k}", text)
        rows.append({"id": f"t{k}", "audio": str(path), "duration": len(wave) / SAMPLE_RATE, "text": text,
                     "raw_text": text, "speaker": "espeak_ml", "source": "espeak"})
    held_waves = [_speak(audio, f"h{k}", text)[1] for k, text in enumerate(held)]

    work = root / "work"
    write_manifest(rows, work / "prepare" / "train" / "manifest.tsv")
    # no dev split: nothing held out steers training or model selection; the last weights are kept
    tokenizer = train_tokenizer(train, TokenizerConfig(type="char"), work / "prepare" / "tokenizer")
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "name": "real_logits", "language": "ml", "workdir": str(work), "seed": 1234,
        "finetune": {"model": MODEL, "init_from": "none", "max_steps": STEPS, "lr": 3e-3,
                     "tri_stage": [0.1, 0.6, 0.3], "batch_seconds": 12, "max_device_batch_seconds": 12,
                     "log_every": 50, "save_every": 10 * STEPS, "mask_time_prob": 0.05,
                     "mask_channel_prob": 0.0, "layerdrop": 0.0}}, allow_unicode=True), encoding="utf-8")
    summary = run_finetune(load_recipe(recipe_path), device="cpu", resume=False)
    assert summary["steps"] == STEPS

    model = AcousticModel(work / "finetune" / "model", device="cpu")
    assert model.tokenizer.labels == tokenizer.labels
    logps = model.log_probs(held_waves)
    # the LM's text covers the held-out word sequences (as an in-domain text corpus would) plus the
    # training transcripts
    lm_dir = root / "lm"
    build_lm(train + held, lm_dir, order=3, normalizer=normalizer, language="ml")
    return held, logps, model.tokenizer, lm_dir, normalizer


def _decode_all(real_logits):
    from lrasr.decode.beam import BeamDecoder
    from lrasr.decode.greedy import greedy_decode
    from lrasr.recipe import DecodeConfig

    refs, logps, tok, lm_dir, _ = real_logits
    cfg = DecodeConfig()  # the defaults a user gets: alpha, beta, beam width
    greedy = [greedy_decode(lp, tok) for lp in logps]
    with BeamDecoder(tok, lm_dir, alpha=cfg.alpha, beta=cfg.beta, beam_width=cfg.beam_width) as decoder:
        with_lm = [decoder.decode(lp).text for lp in logps]
    no_lm = [BeamDecoder(tok, None, beam_width=cfg.beam_width).decode(lp).text for lp in logps]
    return greedy, with_lm, no_lm


@pytest.fixture(scope="module")
def decoded(real_logits):
    return _decode_all(real_logits)


def test_fixture_model_is_partly_right_but_misspells(real_logits, decoded):
    from lrasr.evaluate import score

    refs, _, _, _, normalizer = real_logits
    greedy, _, _ = decoded
    report = score(refs, greedy, normalizer)
    detail = list(zip(refs, greedy))
    # a perfect model leaves the LM nothing to fix; a hopeless one gives it nothing to work with
    assert 0.02 <= report.cer <= 0.6, (f"fixture invalid: greedy CER {report.cer:.3f} on held-out sentences "
                                       f"must be between 0.02 and 0.6 (retune STEPS/lr): {detail}")
    assert report.wer > 0, detail
    # greedy really misspells: some hypothesis word is outside the 12-word vocabulary
    assert any(w not in WORDS for h in greedy for w in h.split()), detail


def test_beam_with_lm_beats_greedy_on_real_logits(real_logits, decoded):
    from lrasr.evaluate import score

    refs, _, _, _, normalizer = real_logits
    greedy, with_lm, no_lm = decoded
    g, b, n = (score(refs, h, normalizer) for h in (greedy, with_lm, no_lm))
    detail = list(zip(refs, greedy, with_lm))
    print(f"held-out WER/CER: greedy {g.wer:.3f}/{g.cer:.3f}, beam+LM {b.wer:.3f}/{b.cer:.3f}, "
          f"beam without LM {n.wer:.3f}/{n.cer:.3f}")
    assert b.wer <= g.wer, detail  # never worse...
    assert b.wer < g.wer, (g.wer, b.wer, detail)  # ...and here strictly better
    assert b.cer <= g.cer, (g.cer, b.cer, detail)
    # the gain comes from the LM, not from beam search itself
    assert b.wer < n.wer, (n.wer, b.wer, list(zip(refs, no_lm, with_lm)))
    # the LM turns at least one misspelled greedy transcript into exactly the reference
    fixed = [r for r, gh, bh in zip(refs, greedy, with_lm) if gh != r and bh == r]
    assert fixed, detail
