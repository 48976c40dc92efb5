"""Model parts: config/presets, masking semantics, quantizer, pretraining loss, CTC model, model folders."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lrasr.errors import LrasrError
from lrasr.model.config import Wav2Vec2Config
from lrasr.model.ctc import Wav2Vec2ForCTC
from lrasr.model.io import load_ctc_model, load_model_dir, save_model_dir
from lrasr.model.masking import compute_channel_mask, compute_span_mask, sample_negatives
from lrasr.model.pretraining import Wav2Vec2ForPreTraining
from lrasr.model.quantizer import GumbelQuantizer


# ------------------------------------------------------------------------------------------ config
def test_presets_have_published_shapes() -> None:
    base, large, tiny = (Wav2Vec2Config.preset(n) for n in ("base", "large", "tiny"))
    assert (base.embed_dim, base.num_layers, base.num_heads, base.ffn_dim) == (768, 12, 12, 3072)
    assert base.extractor_mode == "group_norm" and not base.layer_norm_first and not base.conv_bias
    assert (base.final_dim, base.latent_temp, base.feature_penalty_weight) == (256, (2.0, 0.5, 0.999995), 10.0)
    assert (large.embed_dim, large.num_layers, large.num_heads, large.ffn_dim) == (1024, 24, 16, 4096)
    assert large.extractor_mode == "layer_norm" and large.layer_norm_first and large.conv_bias
    assert (large.final_dim, large.latent_temp[1], large.feature_penalty_weight) == (768, 0.1, 0.0)
    for cfg in (base, large, tiny):
        assert cfg.frame_stride == 320 and len(cfg.conv_layers) == 7
        assert (cfg.mask_time_prob, cfg.mask_time_length, cfg.logit_temp) == (0.65, 10, 0.1)
    assert base.num_frames(16000) == 49 and tiny.num_frames(16000) == 49
    # fairseq's BASE was trained on raw waveforms, LARGE (LV-60k, XLS-R) on standardized ones
    assert not base.normalize_waveform and not tiny.normalize_waveform and large.normalize_waveform


def test_from_recipe_overrides_and_round_trip() -> None:
    cfg = Wav2Vec2Config.from_recipe({"preset": "tiny", "num_layers": 3, "conv_layers": [[16, 10, 5]]})
    assert cfg.num_layers == 3 and cfg.conv_layers == [(16, 10, 5)] and cfg.embed_dim == 128
    assert Wav2Vec2Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(LrasrError, match="num_layer\\b"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "num_layer": 3})
    with pytest.raises(LrasrError, match="unknown model preset 'huge'"):
        Wav2Vec2Config.from_recipe("huge")
    with pytest.raises(LrasrError, match="not divisible by num_heads"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "num_heads": 3})
    # wrong scalar types are named (not a Python error from inside validation); YAML's 2.0 is an int
    with pytest.raises(LrasrError, match="embed_dim must be an integer, got 'x'"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "embed_dim": "x"})
    with pytest.raises(LrasrError, match="dropout must be a number"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "dropout": "high"})
    with pytest.raises(LrasrError, match="recipe model"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "conv_layers": [["a", 10, 5]]})
    assert Wav2Vec2Config.from_recipe({"preset": "tiny", "num_layers": 2.0}).num_layers == 2
    normalized = Wav2Vec2Config.from_recipe({"preset": "tiny", "normalize_waveform": True})
    assert normalized.normalize_waveform and Wav2Vec2Config.from_dict(normalized.to_dict()) == normalized
    assert not Wav2Vec2Config.from_recipe({"preset": "large", "normalize_waveform": False}).normalize_waveform
    with pytest.raises(LrasrError, match="normalize_waveform must be true or false"):
        Wav2Vec2Config.from_recipe({"preset": "tiny", "normalize_waveform": "yes"})
    # a model folder saved before the field existed loads as raw-waveform input
    old = cfg.to_dict()
    del old["normalize_waveform"]
    assert not Wav2Vec2Config.from_dict(old).normalize_waveform


def test_normalize_waveform_per_utterance_over_real_samples() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    from lrasr.model.backbone import normalize_waveform

    gen = torch.Generator().manual_seed(7)
    rows = [torch.randn(n, generator=gen) * s + m for n, s, m in ((900, 0.02, 0.1), (500, 3.0, -1.0), (1, 1.0, 2.0))]
    lengths = torch.tensor([len(r) for r in rows])
    batch = torch.full((3, 900), 5.0)  # junk in the padding: must neither count nor survive
    for b, r in enumerate(rows):
        batch[b, : len(r)] = r
    out = normalize_waveform(batch, lengths)
    ref = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)(
        [r.numpy() for r in rows], sampling_rate=16000, padding=True, return_tensors="pt").input_values
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for b, r in enumerate(rows[:2]):
        real = out[b, : len(r)]
        # eps keeps the std a hair under 1 for quiet input (1 - 1.2e-4 at std 0.02)
        assert abs(float(real.mean())) < 1e-5 and abs(float(real.std(unbiased=False)) - 1) < 1e-3
        assert torch.equal(out[b, len(r):], torch.zeros(900 - len(r)))
        # the same numbers alone as in the batch, and without lengths for a full row
        torch.testing.assert_close(normalize_waveform(r[None], None)[0], out[b, : len(r)], atol=1e-6, rtol=1e-6)
    assert torch.isfinite(out).all()
    bf = normalize_waveform(batch.to(torch.bfloat16), lengths)
    assert bf.dtype == torch.bfloat16 and (bf.float() - out).abs().max() < 0.05


# ----------------------------------------------------------------------------------------- masking
def test_span_mask_fraction_and_equal_counts(seed: int = 0) -> None:
    # averaged over enough draws that no seed decides it: the fraction of one 500-frame row has a
    # standard deviation of 0.03 (400 rows: 0.0015; with 40 rows 3 seeds in 40 missed the 0.01), the
    # equal-count fraction and the run share of one batch 0.015 and 0.024 (10 batches: a third)
    gen = torch.Generator().manual_seed(seed)
    expected = 1 - (1 - 0.065) ** 10  # ~0.49: 0.65 * T / 10 spans of 10 frames, overlapping
    free = torch.stack([compute_span_mask((1, 500), 0.65, 10, None, 2, False, gen) for _ in range(400)])
    assert abs(free.float().mean().item() - expected) < 0.01
    # equal counts per row: every row keeps the batch's smallest count (a bit below 49%, as fairseq)
    masks = torch.stack([compute_span_mask((16, 500), 0.65, 10, None, 2, True, gen) for _ in range(10)])
    counts = masks.sum(2)
    assert bool((counts == counts[:, :1]).all())
    assert 0.40 < masks.float().mean().item() < expected
    # masked frames come in spans: most masked frames have a masked neighbour
    runs = (masks[..., 1:] & masks[..., :-1]).sum() / masks.sum()
    assert runs > 0.8


def test_span_mask_never_masks_padding_and_is_deterministic() -> None:
    lengths = torch.tensor([300, 120, 37, 300])
    a = compute_span_mask((4, 300), 0.65, 10, lengths, 2, True, torch.Generator().manual_seed(5))
    b = compute_span_mask((4, 300), 0.65, 10, lengths, 2, True, torch.Generator().manual_seed(5))
    c = compute_span_mask((4, 300), 0.65, 10, lengths, 2, True, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    pad = torch.arange(300)[None] >= lengths[:, None]
    assert not (a & pad).any()
    counts = a.sum(1)
    assert bool((counts == counts[0]).all()) and counts[0] >= 2
    # without equal counts, the long rows keep ~49%
    free = compute_span_mask((4, 300), 0.65, 10, lengths, 2, False, torch.Generator().manual_seed(5))
    assert not (free & pad).any() and free[0].float().mean() > 0.3


def test_span_mask_short_utterance_and_channel_mask() -> None:
    m = compute_span_mask((2, 8), 0.65, 10, torch.tensor([8, 5]), 2, True, torch.Generator().manual_seed(0))
    assert m.sum(1).min() > 0 and not m[1, 5:].any()
    ch = compute_channel_mask(3, 256, 0.25, 16, torch.Generator().manual_seed(0))
    assert ch.shape == (3, 256) and (ch.sum(1) == ch.sum(1)[0]).all() and 0 < ch.float().mean() < 0.5
    # spans of mask_length channels (one row: no equalizing unmasks inside them): every run of
    # masked channels is one span or overlapping ones, so the shortest runs are exactly 16 long
    gen = torch.Generator().manual_seed(1)
    runs = []
    for _ in range(10):
        row = compute_channel_mask(1, 256, 0.25, 16, gen)[0].int()
        edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int), row, torch.zeros(1, dtype=torch.int)]))
        runs += (torch.nonzero(edges == -1) - torch.nonzero(edges == 1)).flatten().tolist()
    assert min(runs) == 16 and len(runs) >= 20


def test_negatives_exclude_self_and_cover_others() -> None:
    neg = sample_negatives(7, 2, 3000, torch.Generator().manual_seed(0))
    assert neg.shape == (2, 7, 3000)
    own = torch.arange(7)[None, :, None]
    assert not (neg == own).any()
    assert neg.min() == 0 and neg.max() == 6
    counts = torch.stack([(neg[0, 3] == j).sum() for j in range(7) if j != 3]).float()
    assert counts.min() > 0.8 * counts.mean()  # uniform over the other frames


def test_contrastive_accuracy_and_diversity_loss_values() -> None:
    from lrasr.model.losses import contrastive_accuracy, diversity_loss

    # positive best, a distractor best, all equal (a tie counts as wrong), positive best again
    logits = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 1.0, 1.0], [2.0, -1.0, float("-inf")]]])
    assert contrastive_accuracy(logits) == pytest.approx(0.5)
    assert contrastive_accuracy(torch.zeros(0, 3)) == 0.0
    assert diversity_loss(torch.tensor(640.0), 640).item() == 0.0  # every entry used equally
    assert diversity_loss(torch.tensor(160.0), 640).item() == pytest.approx(0.75)


# --------------------------------------------------------------------------------------- quantizer
def test_quantizer_temperature_schedule_and_straight_through() -> None:
    q = GumbelQuantizer(16, 2, 8, 12, (2.0, 0.5, 0.999995))
    assert q.set_num_updates(0) == 2.0
    assert math.isclose(q.set_num_updates(100_000), 2.0 * 0.999995 ** 100_000)
    assert q.set_num_updates(10_000_000) == 0.5
    large = Wav2Vec2ForPreTraining(dataclasses.replace(Wav2Vec2Config.preset("tiny"), latent_temp=(2.0, 0.1, 0.9)))
    assert large.set_num_updates(1000) == 0.1

    x = torch.randn(40, 16)
    q.train()
    out = q(x)
    book = q.codevectors.view(2, 8, 6)
    picked = torch.cat([book[g][out.codes[:, g]] for g in range(2)], dim=1)
    torch.testing.assert_close(out.vectors, picked)  # hard one-hot forward
    out.vectors.sum().backward()
    assert q.weight_proj.weight.grad is not None and q.weight_proj.weight.grad.abs().sum() > 0
    assert 1.0 <= out.prob_perplexity.item() <= 16.0 and 1.0 <= out.code_perplexity.item() <= 16.0
    q.eval()
    e1, e2 = q(x), q(x)
    assert torch.equal(e1.vectors, e2.vectors) and torch.equal(e1.codes, q.weight_proj(x).view(40, 2, 8).argmax(-1))


# -------------------------------------------------------------------------------------- pretraining
def _batch(seconds: float = 1.0, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    samples = int(seconds * 16000)
    wave = torch.randn(n, samples, generator=torch.Generator().manual_seed(3)) * 0.2
    lengths = torch.tensor([samples] + [samples * 3 // 4] * (n - 1))
    for b in range(1, n):
        wave[b, lengths[b]:] = 0
    return wave, lengths


def test_pretraining_outputs_and_feature_grad_mult() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1, feature_grad_mult=1.0)
    model = Wav2Vec2ForPreTraining(cfg)
    wave, lengths = _batch()
    out = model(wave, lengths)
    assert set(out.losses) == {"contrastive", "diversity", "feature_penalty"}
    assert set(out.metrics) == {"accuracy", "code_perplexity", "prob_perplexity", "temperature", "mask_fraction"}
    expected = (out.losses["contrastive"] + 0.1 * out.losses["diversity"]
                + 10.0 * out.losses["feature_penalty"])
    torch.testing.assert_close(out.loss, expected)
    assert 0.25 < out.metrics["mask_fraction"] < 0.7 and out.num_masked == int(out.mask.sum())
    # near chance at init: log(K+1)
    assert abs(out.losses["contrastive"].item() - math.log(cfg.num_negatives + 1)) < 1.0
    # the values themselves: masked share of the real frames (49 + 37, padding not counted), the
    # share of masked frames whose positive (index 0) scores highest, the feature encoder output's
    # mean square over real frames
    frames = [cfg.num_frames(int(n)) for n in lengths]
    assert out.metrics["mask_fraction"] == pytest.approx(out.num_masked / sum(frames))
    assert out.metrics["accuracy"] == pytest.approx(float((out.logits.argmax(-1) == 0).float().mean()))
    with torch.no_grad():
        feats, _ = model.backbone.feature_extractor(wave, lengths)
    squares = sum(float(feats[b, :n].pow(2).sum()) for b, n in enumerate(frames))
    assert frames[1] < feats.shape[1]  # a padded row: its padding must stay out of the mean
    assert out.losses["feature_penalty"].item() == pytest.approx(squares / (sum(frames) * feats.shape[-1]), rel=1e-4)

    # the feature encoder's gradient scales with feature_grad_mult, nothing else changes
    model.eval()
    neg = sample_negatives(int(out.mask.sum(1)[0]), 2, cfg.num_negatives, torch.Generator().manual_seed(0))
    grads = []
    for mult in (1.0, 0.1):
        model.cfg = dataclasses.replace(cfg, feature_grad_mult=mult)
        model.zero_grad()
        model(wave, lengths, mask=out.mask, negative_indices=neg).loss.backward()
        grads.append((model.backbone.feature_extractor.conv_layers[1].conv.weight.grad.clone(),
                      model.final_proj.weight.grad.clone()))
    scaled = grads[0][0] * 0.1
    assert (grads[1][0] - scaled).norm() / scaled.norm() < 1e-4
    torch.testing.assert_close(grads[1][1], grads[0][1])


def test_pretraining_with_normalize_waveform_ignores_gain_and_offset() -> None:
    """With normalize_waveform the pretraining forward sees each utterance standardized: gain and DC
    offset of the raw input (per utterance, padding untouched) change nothing; without it they do."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1, normalize_waveform=True)
    model = Wav2Vec2ForPreTraining(cfg).eval()
    wave, lengths = _batch()
    louder = wave.clone()
    louder[0] = louder[0] * 7.0 + 0.5
    louder[1, : lengths[1]] = louder[1, : lengths[1]] * 0.1 - 0.2
    frames = torch.tensor([cfg.num_frames(int(n)) for n in lengths])
    mask = model.compute_mask(frames, cfg.num_frames(wave.shape[1]))
    neg = sample_negatives(int(mask.sum(1)[0]), 2, cfg.num_negatives, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(wave, lengths, mask=mask, negative_indices=neg)
        b = model(louder, lengths, mask=mask, negative_indices=neg)
        torch.testing.assert_close(a.loss, b.loss, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.hidden, b.hidden, atol=1e-3, rtol=1e-3)
        model.cfg = dataclasses.replace(cfg, normalize_waveform=False)
        raw = model(louder, lengths, mask=mask, negative_indices=neg)
    assert (raw.hidden - b.hidden).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------- ctc
def test_ctc_shapes_lengths_and_training_only_masking() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=2, mask_time_prob=0.5,
                              mask_channel_prob=0.25, layerdrop=0.5, feature_grad_mult=0.0)
    model = Wav2Vec2ForCTC(cfg, vocab_size=12)
    wave, lengths = _batch(1.0, 3)
    model.eval()
    logits, out_len = model(wave, lengths)
    assert logits.shape == (3, 49, 12)
    assert out_len.tolist() == [cfg.num_frames(int(n)) for n in lengths] == [49, 37, 37]
    assert torch.equal(model(wave, lengths)[0], logits)  # eval: no masks, no layerdrop
    model.train()
    a, b = model(wave, lengths)[0], model(wave, lengths)[0]
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert model.backbone.feature_extractor.conv_layers[0].conv.weight.grad is None  # frozen (mult 0)
    assert model.aux.weight.grad is not None


def _runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int), flags.int(), torch.zeros(1, dtype=torch.int)]))
    return (torch.nonzero(edges == -1) - torch.nonzero(edges == 1)).flatten().tolist()


def test_ctc_training_masks_use_the_configured_span_lengths() -> None:
    """What reaches the transformer in training: whole channels zeroed in runs of mask_channel_length,
    frames replaced by the mask embedding in runs of mask_time_length (one utterance per batch, so no
    equalizing cuts a span; the shortest run is one span)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1, layerdrop=0.0, dropout=0.0,
                              dropout_input=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = Wav2Vec2ForCTC(cfg, vocab_size=8).train()
    seen = []
    model.backbone.encoder.transformer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0]),
                                                                 with_kwargs=True)
    wave = torch.randn(1, 48000, generator=torch.Generator().manual_seed(1)) * 0.1
    chan, time = [], []
    with torch.no_grad():
        model.cfg = dataclasses.replace(cfg, mask_time_prob=0.0, mask_channel_prob=0.25, mask_channel_length=16)
        for _ in range(8):
            model(wave)
            chan += _runs((seen[-1][0] == 0).all(0))
        model.cfg = dataclasses.replace(cfg, mask_time_prob=0.3, mask_time_length=4, mask_channel_prob=0.0)
        for _ in range(4):
            model(wave)
            time += _runs((seen[-1][0] == model.mask_embedding).all(-1))
    assert min(chan) == 16 and len(chan) >= 8, chan
    assert min(time) == 4 and len(time) >= 8, time


# ------------------------------------------------------------------------------------ model folders
def test_model_dir_round_trip(tmp_path) -> None:
    from lrasr.text.tokenizer import CharTokenizer

    tok = CharTokenizer.from_texts(["abc ab", "ca"])
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1)
    ctc = Wav2Vec2ForCTC(cfg, len(tok.labels)).eval()
    save_model_dir(tmp_path / "ctc", ctc, tok)
    model, tok2 = load_ctc_model(tmp_path / "ctc")
    wave, lengths = _batch(0.5)
    assert torch.equal(model(wave, lengths)[0], ctc(wave, lengths)[0])
    assert tok2.labels == tok.labels

    pre = Wav2Vec2ForPreTraining(cfg)
    save_model_dir(tmp_path / "pre", pre)
    loaded = load_model_dir(tmp_path / "pre")
    assert isinstance(loaded, Wav2Vec2ForPreTraining)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in pre.state_dict().items())
    with pytest.raises(LrasrError, match="not a fine-tuned CTC model"):
        load_ctc_model(tmp_path / "pre")
    save_model_dir(tmp_path / "notok", ctc)
    with pytest.raises(LrasrError, match="notok.*no tokenizer"):
        load_ctc_model(tmp_path / "notok")
    with pytest.raises(LrasrError, match="no config.json"):
        load_model_dir(tmp_path)
    # weights of another shape: named in the error
    other = Wav2Vec2ForCTC(cfg, len(tok.labels) + 1)
    save_model_dir(tmp_path / "bad", other)
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "ctc" / "config.json").read_text())
    with pytest.raises(LrasrError, match="backbone.aux.weight"):
        load_model_dir(tmp_path / "bad")


def test_pretraining_survives_utterances_shorter_than_a_frame() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1))
    for short, expect_masked in ((300, False), (1000, True)):  # 300 samples = 0 frames, 1000 = 2 frames
        model.zero_grad()
        out = model(torch.randn(2, 16000), torch.tensor([16000, short]))
        assert torch.isfinite(out.loss) and (out.num_masked > 0) == expect_masked
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_autocast_keeps_the_loss_in_float32() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1))
    wave, lengths = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wave, lengths)
    assert out.hidden.dtype == torch.bfloat16  # the backbone did run in bf16
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
