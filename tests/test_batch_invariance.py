"""An utterance's outputs must not depend on what it is batched with (padding never reaches a real frame).

torchaudio/transformers/fairseq's group-norm feature encoder normalizes conv 0's output over the whole
padded time axis, so a padded utterance changed with its batch (a greedy dev CER of 0.409 in fine-tuning
vs 0.418 from ``lrasr evaluate`` on the demo). These tests run each model alone and padded next to a
longer utterance, with zeros and with noise in the padding, and compare the valid frames.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchaudio.models.wav2vec2 import components

from lrasr.model.backbone import run_transformer
from lrasr.model.config import Wav2Vec2Config
from lrasr.model.ctc import Wav2Vec2ForCTC
from lrasr.model.feature_encoder import conv0_padding, first_layer_per_utterance
from lrasr.model.pretraining import Wav2Vec2ForPreTraining

SHORT, LONG = 6000, 16000  # samples: 18 and 49 frames


class PerUtteranceGroupNorm(torch.nn.Module):
    """torch's own GroupNorm applied to each row's first ``frames[b]`` steps alone (padded steps keep
    the plain result): an independent reference for what lrasr computes on a padded batch."""

    def __init__(self, norm: torch.nn.GroupNorm, frames: list[int]):
        super().__init__()
        self.norm, self.frames = norm, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(x).clone()
        for b, n in enumerate(self.frames):
            out[b, :, :n] = self.norm(x[b:b + 1, :, :n])[0]
        return out


def per_utterance_group_norm(hf_model: torch.nn.Module, sample_lengths) -> None:
    """Make a transformers wav2vec2 model (group-norm layout) normalize conv 0 per utterance over its
    valid frames, so that its padded-batch outputs are each utterance's outputs alone -- what lrasr
    gives (transformers lets padding into those statistics). Used by the reference tests."""
    layer = hf_model.wav2vec2.feature_extractor.conv_layers[0]
    kernel, stride = layer.conv.kernel_size[0], layer.conv.stride[0]
    frames = [max((int(n) - kernel) // stride + 1, 0) for n in sample_lengths]
    layer.layer_norm = PerUtteranceGroupNorm(layer.layer_norm, frames)


def tiny(mode: str = "group_norm", **kw) -> Wav2Vec2Config:
    return dataclasses.replace(Wav2Vec2Config.preset("tiny"), extractor_mode=mode, **kw)


def pair(pad_noise: bool, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(short utterance [SHORT], padded batch [2, LONG] with the short one first, lengths [2])."""
    g = torch.Generator().manual_seed(seed)
    short = torch.randn(SHORT, generator=g) * 0.1
    batch = torch.randn(2, LONG, generator=g) * 0.1
    if pad_noise:  # whatever sits in the padding must not matter either
        batch[0, SHORT:] = torch.randn(LONG - SHORT, generator=g)
    else:
        batch[0, SHORT:] = 0.0
    batch[0, :SHORT] = short
    return short, batch, torch.tensor([SHORT, LONG])


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
@pytest.mark.parametrize("pad_noise", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_ctc_logits_of_a_padded_utterance_equal_its_logits_alone(mode: str, pad_noise: bool, normalize: bool) -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(mode, normalize_waveform=normalize), 12).eval()
    short, batch, lengths = pair(pad_noise)
    with torch.no_grad():
        alone, frames_alone = model(short[None], torch.tensor([SHORT]))
        alone_long, _ = model(batch[1:], lengths[1:])
        together, frames = model(batch, lengths)
        reversed_, _ = model(batch.flip(0), lengths.flip(0))  # the short one second
    n = int(frames_alone[0])
    assert frames.tolist() == [n, together.shape[1]] and n < together.shape[1]
    torch.testing.assert_close(together[0, :n], alone[0], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(reversed_[1, :n], alone[0], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(together[1], alone_long[0], atol=5e-5, rtol=1e-4)


def test_plain_group_norm_feature_encoder_leaks_padding() -> None:
    """The defect the fix removes: torchaudio's encoder without lengths mixes padding into every frame
    (so the test input above does exercise it), and the fixed one with lengths does not."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(), 12).eval()
    short, batch, lengths = pair(pad_noise=False)
    extractor = model.backbone.feature_extractor
    with torch.no_grad():
        alone, _ = extractor(short[None], None)
        plain, _ = extractor(batch, None)
        fixed, frames = extractor(batch, lengths)
    n = alone.shape[1]
    assert int(frames[0]) == n
    assert (plain[0, :n] - alone[0]).abs().max() > 1e-2
    torch.testing.assert_close(fixed[0, :n], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("groups", [8, 2])
def test_first_layer_per_utterance_equals_each_utterance_alone(groups: int) -> None:
    """Values and gradients (conv and norm parameters) of each row's valid frames equal conv 0 +
    GroupNorm + GELU on that utterance alone; padded frames are 0; a row too short for 2 frames is 0."""
    torch.manual_seed(0)
    first = components.ConvLayerBlock(1, 8, 10, 5, False, torch.nn.GroupNorm(groups, 8))
    with torch.no_grad():
        first.layer_norm.weight.normal_()
        first.layer_norm.bias.normal_()
    samples = torch.tensor([400, 290, 12, 60])
    frames0 = conv0_padding(samples, 400, 10, 5)
    assert frames0.tolist() == [79, 57, 1, 11]
    wave = torch.randn(4, 400) + 0.5
    out = first_layer_per_utterance(first, wave, samples, frames0)
    assert out.shape == (4, 8, 79)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    params = (first.conv.weight, first.layer_norm.weight, first.layer_norm.bias)
    grads = [q.grad.clone() for q in params]
    for q in params:
        q.grad = None
    total = 0.0
    for b, (n_samples, n) in enumerate(zip(samples.tolist(), frames0.tolist())):
        if n < 2:
            assert not out[b].any()
            continue
        ref, _ = first(wave[b:b + 1, None, :n_samples], None)
        torch.testing.assert_close(out[b:b + 1, :, :n], ref, atol=1e-6, rtol=1e-6)
        assert not out[b, :, n:].any()
        total = total + (ref * weights[b:b + 1, :, :n]).sum()
    total.backward()
    for got, q in zip(grads, params):
        torch.testing.assert_close(got, q.grad, atol=1e-4, rtol=1e-4)
    # every row too short: zeros, and the parameters stay in the graph (DDP needs their gradients)
    short = torch.tensor([12, 3, 0, 14])
    empty = first_layer_per_utterance(first, wave, short, conv0_padding(short, 400, 10, 5))
    assert empty.shape == (4, 8, 79) and not empty.any()
    empty.sum().backward()
    assert first.conv.weight.grad is not None


def test_unpadded_batches_take_the_plain_group_norm() -> None:
    """Equal lengths (or padding too short to add a conv-0 frame) run torchaudio's own encoder, bit for bit."""
    assert conv0_padding(torch.tensor([16000, 16000]), 16000, 10, 5) is None
    assert conv0_padding(torch.tensor([16004, 16000]), 16004, 10, 5) is None  # both 3199 frames
    assert conv0_padding(torch.tensor([16000, 15990]), 16000, 10, 5).tolist() == [3199, 3197]
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(), 12).eval()
    _, batch, _ = pair(pad_noise=False)
    extractor = model.backbone.feature_extractor
    with torch.no_grad():
        ours, frames = extractor(batch, torch.tensor([LONG, LONG]))
        ref, ref_frames = components.FeatureExtractor.forward(extractor, batch, torch.tensor([LONG, LONG]))
    assert torch.equal(ours, ref) and torch.equal(frames, ref_frames)


def test_transformer_ignores_padded_frames() -> None:
    """Attention masks padded keys and the positional conv sees zeros past the end, as alone."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(), 12).eval()
    x = torch.randn(2, 30, 128)
    x[0, 11:] = torch.randn(19, 128) * 10  # garbage in the padded frames
    pad = torch.arange(30)[None, :] >= torch.tensor([11, 30])[:, None]
    with torch.no_grad():
        alone = run_transformer(model.backbone, x[:1, :11], None)
        together = run_transformer(model.backbone, x, pad)
    torch.testing.assert_close(together[0, :11], alone[0], atol=2e-5, rtol=1e-4)


def test_pretraining_outputs_of_a_padded_utterance_equal_its_outputs_alone() -> None:
    torch.manual_seed(0)
    cfg = tiny(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
               dropout_features=0.0)
    model = Wav2Vec2ForPreTraining(cfg).eval()
    short, batch, lengths = pair(pad_noise=True)
    n = cfg.num_frames(SHORT)
    mask = torch.zeros(2, cfg.num_frames(LONG), dtype=torch.bool)
    mask[0, 3:9] = True
    mask[1, 20:26] = True
    neg = torch.randint(0, 6, (2, 6, 5))
    with torch.no_grad():
        alone = model(short[None], torch.tensor([SHORT]), mask=mask[:1, :n], negative_indices=neg[:1])
        together = model(batch, lengths, mask=mask, negative_indices=neg)
    torch.testing.assert_close(together.hidden[0, :n], alone.hidden[0], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(together.targets[0], alone.targets[0], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(together.logits[0], alone.logits[0], atol=5e-5, rtol=1e-4)


def test_inference_paths_give_each_utterance_the_same_log_probs_whatever_the_batching(tmp_path) -> None:
    """``lrasr evaluate``/``transcribe`` (AcousticModel) and fine-tuning's dev evaluation
    (``forward_batches``) at any batch size agree with each utterance run alone."""
    from lrasr.decode.acoustic import AcousticModel
    from lrasr.evaluate import forward_batches
    from lrasr.model.io import save_model_dir
    from lrasr.text.tokenizer import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(["കട മരം"])
    save_model_dir(tmp_path / "model", Wav2Vec2ForCTC(tiny(), len(tok.labels)).eval(), tok)
    g = torch.Generator().manual_seed(3)
    waves = [(torch.randn(n, generator=g) * 0.1).numpy() for n in (24000, 5000, 17000, 9000, 300)]
    alone = AcousticModel(tmp_path / "model", device="cpu", batch_seconds=0.01).log_probs(waves)
    together = AcousticModel(tmp_path / "model", device="cpu", batch_seconds=100.0).log_probs(waves)
    model = AcousticModel(tmp_path / "model", device="cpu").model
    dev = {}
    for idx, logits, frames in forward_batches(model, waves, "cpu", 2.0):
        for row, i in enumerate(idx):
            dev[i] = torch.log_softmax(logits[row, : int(frames[row])], -1)
    for i in range(len(waves)):
        assert alone[i].shape == together[i].shape == tuple(dev[i].shape)
        torch.testing.assert_close(torch.from_numpy(together[i]), torch.from_numpy(alone[i]), atol=5e-5, rtol=1e-4)
        torch.testing.assert_close(dev[i], torch.from_numpy(alone[i]), atol=5e-5, rtol=1e-4)
