"""lrasr's wav2vec 2.0 against transformers' Wav2Vec2ForPreTraining (the reference implementation).

Same random weights (lrasr's copied into a locally built transformers model; nothing downloaded),
same input, mask and distractors: backbone output, quantized targets, contrastive logits, contrastive
and diversity losses must agree within float32 tolerance, for both layouts (BASE: group-norm conv,
post-LN; LARGE: layer-norm convs, pre-LN).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lrasr.model.config import Wav2Vec2Config
from lrasr.model.hf_names import from_transformers_name, to_transformers_name, transformers_config_kwargs
from lrasr.model.masking import compute_span_mask, sample_negatives
from lrasr.model.pretraining import Wav2Vec2ForPreTraining
from test_batch_invariance import per_utterance_group_norm

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2 import modeling_wav2vec2 as hf  # noqa: E402


def small_config(large: bool) -> Wav2Vec2Config:
    cfg = Wav2Vec2Config.from_recipe({
        "preset": "large" if large else "base",
        "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
        "embed_dim": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 128,
        "pos_conv_kernel": 16, "pos_conv_groups": 4,
        "final_dim": 24, "codevector_dim": 32, "num_codevectors_per_group": 16, "num_negatives": 20,
    })
    # no randomness besides what the test controls; raw input (the large preset normalizes it: that
    # has its own test against transformers' feature extractor)
    return dataclasses.replace(cfg, normalize_waveform=False, dropout=0.0, attention_dropout=0.0,
                               activation_dropout=0.0, dropout_input=0.0, dropout_features=0.0, layerdrop=0.0)


def hf_model_from(cfg: Wav2Vec2Config) -> "hf.Wav2Vec2ForPreTraining":
    return hf.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**transformers_config_kwargs(cfg)))


def copy_weights(ours: Wav2Vec2ForPreTraining, theirs: torch.nn.Module) -> None:
    mine = {to_transformers_name(k): v for k, v in ours.state_dict().items()}
    assert all(from_transformers_name(to_transformers_name(k)) == k for k in ours.state_dict())
    ref = theirs.state_dict()
    assert set(mine) == set(ref), (sorted(set(mine) ^ set(ref)))
    for k, v in mine.items():
        assert ref[k].shape == v.shape, k
    theirs.load_state_dict(mine, strict=True)


def to_hf_negatives(neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, M, K] indices into masked frames -> transformers' [B, T, K] flat indices into B*T."""
    batch, frames = mask.shape
    out = torch.zeros(batch, frames, neg.shape[-1], dtype=torch.long)
    for b in range(batch):
        pos = mask[b].nonzero().squeeze(1)
        out[b, pos] = pos[neg[b]] + b * frames
        out[b, ~mask[b]] = b * frames
    return out


def hf_logits(model, out, neg_flat: torch.Tensor) -> torch.Tensor:
    """transformers' contrastive logits [K+1, B, T], recomputed exactly as its forward does."""
    q = out.projected_quantized_states
    batch, frames, dim = q.shape
    negs = q.view(-1, dim)[neg_flat.view(-1)].view(batch, frames, -1, dim).permute(2, 0, 1, 3)
    logits = model.compute_contrastive_logits(q[None], negs, out.projected_states,
                                              model.config.contrastive_logits_temperature)
    neg_is_pos = (q == negs).all(-1)
    logits[1:][neg_is_pos] = float("-inf")
    return logits


@pytest.mark.parametrize("large", [False, True], ids=["base_layout", "large_layout"])
def test_matches_transformers(large: bool) -> None:
    torch.manual_seed(0)
    cfg = small_config(large)
    ours = Wav2Vec2ForPreTraining(cfg).eval()
    theirs = hf_model_from(cfg).eval()
    copy_weights(ours, theirs)

    samples = torch.tensor([24000, 19000, 16000])
    wave = torch.randn(3, int(samples.max())) * 0.3
    for b, n in enumerate(samples):
        wave[b, n:] = 0.0
    attention = (torch.arange(wave.shape[1])[None] < samples[:, None]).long()
    frames = torch.tensor([cfg.num_frames(int(n)) for n in samples])
    num_frames = cfg.num_frames(wave.shape[1])
    gen = torch.Generator().manual_seed(1)
    mask = compute_span_mask((3, num_frames), 0.65, 4, frames, 2, True, gen)
    m = int(mask.sum(1)[0])
    neg = sample_negatives(m, 3, cfg.num_negatives, gen)
    neg_flat = to_hf_negatives(neg, mask)
    if not large:  # lrasr keeps padding out of conv 0's group norm; transformers, per utterance, equals it
        per_utterance_group_norm(theirs, samples)

    with torch.no_grad():
        out = ours(wave, samples, mask=mask, negative_indices=neg)
        ref_hidden = theirs.wav2vec2(wave, attention_mask=attention, mask_time_indices=mask).last_hidden_state
        ref = theirs(wave, attention_mask=attention, mask_time_indices=mask, sampled_negative_indices=neg_flat)
        ref_logits = hf_logits(theirs, ref, neg_flat)

    valid = torch.arange(num_frames)[None] < frames[:, None]
    torch.testing.assert_close(out.hidden[valid], ref_hidden[valid], atol=2e-5, rtol=1e-4)
    # quantized targets (eval mode: argmax codes, deterministic) after project_q, at masked frames
    torch.testing.assert_close(out.targets.reshape(-1, cfg.final_dim), ref.projected_quantized_states[mask],
                               atol=2e-5, rtol=1e-4)
    # logits [B, M, K+1] vs transformers' [K+1, B, T] at masked frames, -inf in the same places
    ref_at_mask = ref_logits.permute(1, 2, 0)[mask].view(3, m, -1)
    assert torch.equal(torch.isinf(out.logits), torch.isinf(ref_at_mask))
    finite = torch.isfinite(ref_at_mask)
    torch.testing.assert_close(out.logits[finite], ref_at_mask[finite], atol=1e-4, rtol=1e-4)
    # transformers sums the contrastive loss over masked frames; lrasr averages it (fairseq)
    torch.testing.assert_close(out.losses["contrastive"] * out.num_masked, ref.contrastive_loss,
                               atol=1e-3, rtol=1e-5)

    # diversity: transformers uses the softmax perplexity (what lrasr always uses) in training mode;
    # with every dropout at 0 its train-mode perplexity does not depend on the Gumbel noise
    theirs.train()
    with torch.no_grad():
        ref_train = theirs(wave, attention_mask=attention, mask_time_indices=mask,
                           sampled_negative_indices=neg_flat)
    torch.testing.assert_close(out.losses["diversity"] * out.num_masked, ref_train.diversity_loss,
                               atol=1e-4, rtol=1e-5)
    # code perplexity (hard argmax histogram) = transformers' eval-mode perplexity
    torch.testing.assert_close(torch.tensor(out.metrics["code_perplexity"]), ref.codevector_perplexity,
                               atol=1e-4, rtol=1e-5)
    assert out.num_masked == int(mask.sum())


def test_ctc_names_match_transformers_ctc() -> None:
    cfg = small_config(False)
    from lrasr.model.ctc import Wav2Vec2ForCTC

    ours = Wav2Vec2ForCTC(cfg, 11)
    theirs = hf.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**transformers_config_kwargs(cfg, vocab_size=11)))
    mine = {to_transformers_name(k): v for k, v in ours.state_dict().items()}
    assert set(mine) == set(theirs.state_dict())
    theirs.load_state_dict(mine)
    ours.eval(), theirs.eval()
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(ours(wave)[0], theirs(wave).logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("large", [False, True], ids=["base_layout", "large_layout"])
def test_normalized_input_matches_transformers_feature_extractor(large: bool) -> None:
    """normalize_waveform inside lrasr's forward = transformers' Wav2Vec2FeatureExtractor(do_normalize)
    in front of its Wav2Vec2ForCTC, on a padded batch of two lengths (statistics over real samples)."""
    from lrasr.model.ctc import Wav2Vec2ForCTC

    torch.manual_seed(5)
    cfg = dataclasses.replace(small_config(large), normalize_waveform=True)
    ours = Wav2Vec2ForCTC(cfg, 11).eval()
    theirs = hf.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**transformers_config_kwargs(cfg, vocab_size=11))).eval()
    theirs.load_state_dict({to_transformers_name(k): v for k, v in ours.state_dict().items()})
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    # far from zero mean / unit variance (quiet, with a DC offset), so that normalization matters
    raw = [torch.randn(n) * 0.05 + 0.3 for n in (12000, 7300)]
    lengths = torch.tensor([len(w) for w in raw])
    batch = torch.zeros(2, int(lengths.max()))
    for b, w in enumerate(raw):
        batch[b, : len(w)] = w
    inputs = extractor([w.numpy() for w in raw], sampling_rate=16000, padding=True, return_tensors="pt")
    if not large:  # lrasr keeps padding out of conv 0's group norm; transformers, per utterance, equals it
        per_utterance_group_norm(theirs, lengths)
    assert torch.equal(inputs.input_values[1, 7300:], torch.zeros(12000 - 7300))
    with torch.no_grad():
        logits, out_lengths = ours(batch, lengths)
        ref = theirs(inputs.input_values, attention_mask=inputs.attention_mask).logits
        ours.cfg = dataclasses.replace(cfg, normalize_waveform=False)  # cfg is read on every call
        unnormalized, _ = ours(batch, lengths)
    valid = torch.arange(logits.shape[1])[None] < out_lengths[:, None]
    assert int(out_lengths[1]) < logits.shape[1]  # the second row really is padded
    torch.testing.assert_close(logits[valid], ref[valid], atol=2e-5, rtol=1e-4)
    assert (unnormalized - logits)[valid].abs().max() > 1e-2  # the comparison is not blind to the flag
