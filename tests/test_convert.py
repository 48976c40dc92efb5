"""Checkpoint interoperability: transformers export/import, fairseq import, load reports."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from lrasr.convert import export_hf, load_pretrained_into, model_config_from, read_checkpoint
from lrasr.convert.arch import lrasr_config_from_arch
from lrasr.errors import LrasrError
from lrasr.model.config import Wav2Vec2Config
from lrasr.model.ctc import Wav2Vec2ForCTC
from lrasr.model.io import load_ctc_model, save_model_dir
from lrasr.model.pretraining import Wav2Vec2ForPreTraining
from lrasr.text.tokenizer import CharTokenizer
from test_batch_invariance import per_utterance_group_norm

transformers = pytest.importorskip("transformers")


def tiny_cfg(**over) -> Wav2Vec2Config:
    # smaller than the tiny preset: these tests only check that numbers carry over exactly
    return Wav2Vec2Config.from_recipe({"preset": "tiny", "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4
                                       + [[32, 2, 2]] * 2, "embed_dim": 32, "ffn_dim": 64, "pos_conv_kernel": 16,
                                       "pos_conv_groups": 4, "final_dim": 16, "codevector_dim": 16,
                                       "num_codevectors_per_group": 8, **over})


@pytest.fixture(scope="module")
def ctc_folder(tmp_path_factory):
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(["കട മരം", "ഒരു വാക്ക്"])
    model = Wav2Vec2ForCTC(tiny_cfg(), len(tok.labels)).eval()
    with torch.no_grad():
        model.aux.bias[tok.labels.index("<unk>")] = -50.0  # transformers spells <unk> as text, lrasr as ⁇
        model.aux.weight.mul_(20.0)  # a spread of labels in the greedy path, not one winner
    folder = save_model_dir(tmp_path_factory.mktemp("ctc") / "model", model, tok)
    return folder, model, tok


def _greedy_ids(logits: torch.Tensor) -> list[int]:
    return [i for i in torch.unique_consecutive(logits.argmax(-1)).tolist() if i != 0]


def test_export_hf_matches_lrasr_logits_and_transcripts(ctc_folder, tmp_path):
    folder, model, tok = ctc_folder
    out = tmp_path / "hf"
    summary = export_hf(folder, out)
    assert summary["vocab_size"] == len(tok.labels)
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(str(out)).eval()
    proc = transformers.Wav2Vec2Processor.from_pretrained(str(out))
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and vocab["|"] == tok.labels.index("|")
    assert proc.feature_extractor.do_normalize is False  # this model was trained on raw waveforms
    # every token id the processor can produce is an output of the head (no <s>/</s> beyond it)
    assert len(proc.tokenizer) == hf.config.vocab_size
    torch.manual_seed(1)
    for seconds in (0.7, 1.3):
        wave = torch.randn(1, int(16000 * seconds)) * 0.1
        with torch.no_grad():
            ours, _ = model(wave)
            inputs = proc(wave[0].numpy(), sampling_rate=16000, return_tensors="pt")
            theirs = hf(inputs.input_values).logits
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
        ids = _greedy_ids(ours[0])
        assert len(set(ids)) > 3  # a transcript with content, not a trivial comparison
        assert proc.batch_decode(theirs.argmax(-1))[0] == tok.decode(ids)


def test_round_trip_lrasr_hf_lrasr(ctc_folder, tmp_path):
    folder, model, tok = ctc_folder
    export_hf(folder, tmp_path / "hf")
    ckpt = read_checkpoint(tmp_path / "hf")
    assert ckpt.format == "hf" and ckpt.labels == tok.labels
    cfg = model_config_from(ckpt, Wav2Vec2Config.preset("tiny"))
    assert [list(c) for c in cfg.conv_layers] == [list(c) for c in model.cfg.conv_layers]
    assert (cfg.embed_dim, cfg.num_layers, cfg.ffn_dim, cfg.pos_conv_kernel) == (32, 2, 64, 16)
    back = Wav2Vec2ForCTC(cfg, ckpt.head_size).eval()
    report = load_pretrained_into(back, ckpt)
    assert not report.missing and not report.unexpected
    wave = torch.randn(2, 12000)
    with torch.no_grad():
        torch.testing.assert_close(back(wave)[0], model(wave)[0], atol=0, rtol=0)


def test_normalize_waveform_survives_export_and_import(tmp_path):
    """A model trained on standardized input exports do_normalize=True; transformers' processor then
    feeds its model what lrasr's forward computes from raw audio (padded batch), and the import sets
    normalize_waveform again whatever the recipe's base says; a raw-input model stays raw."""
    torch.manual_seed(6)
    tok = CharTokenizer.from_texts(["കട മരം"])
    model = Wav2Vec2ForCTC(tiny_cfg(normalize_waveform=True), len(tok.labels)).eval()
    folder = save_model_dir(tmp_path / "model", model, tok)
    summary = export_hf(folder, tmp_path / "hf")
    assert summary["do_normalize"] is True
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is True and pre["return_attention_mask"] is True
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(str(tmp_path / "hf")).eval()
    proc = transformers.Wav2Vec2Processor.from_pretrained(str(tmp_path / "hf"))
    raw = [torch.randn(n) * 0.02 + 0.2 for n in (11000, 6500)]  # quiet and off-centre: normalizing matters
    lengths = torch.tensor([len(w) for w in raw])
    batch = torch.zeros(2, 11000)
    for b, w in enumerate(raw):
        batch[b, : len(w)] = w
    inputs = proc([w.numpy() for w in raw], sampling_rate=16000, padding=True, return_tensors="pt")
    per_utterance_group_norm(hf, lengths)  # lrasr keeps padding out of conv 0's group norm (tiny layout)
    with torch.no_grad():
        ours, out_lengths = model(batch, lengths)
        theirs = hf(inputs.input_values, attention_mask=inputs.attention_mask).logits
    valid = torch.arange(ours.shape[1])[None] < out_lengths[:, None]
    torch.testing.assert_close(theirs[valid], ours[valid], atol=1e-4, rtol=1e-4)

    for base in ("tiny", "large"):  # tiny is raw by default, large normalized: the checkpoint decides
        cfg = model_config_from(tmp_path / "hf", Wav2Vec2Config.preset(base))
        assert cfg.normalize_waveform is True
        assert model_config_from(folder, Wav2Vec2Config.preset(base)).normalize_waveform is True
    back = Wav2Vec2ForCTC(model_config_from(tmp_path / "hf", Wav2Vec2Config.preset("tiny")), len(tok.labels)).eval()
    load_pretrained_into(back, tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(back(batch, lengths)[0], ours, atol=0, rtol=0)

    # and a raw-input model: exported without normalization, imported raw even onto the large preset
    raw_model = Wav2Vec2ForCTC(tiny_cfg(), len(tok.labels))
    save_model_dir(tmp_path / "raw", raw_model, tok)
    export_hf(tmp_path / "raw", tmp_path / "raw_hf")
    assert model_config_from(tmp_path / "raw_hf", Wav2Vec2Config.preset("large")).normalize_waveform is False
    # attention masks: what transformers' own configs ask for -- not for the group-norm (BASE) layout,
    # which was trained on zero padding, always for the layer-norm (LARGE) one
    raw_pre = json.loads((tmp_path / "raw_hf" / "preprocessor_config.json").read_text())
    assert raw_pre["do_normalize"] is False and raw_pre["return_attention_mask"] is False
    save_model_dir(tmp_path / "ln", Wav2Vec2ForCTC(tiny_cfg(extractor_mode="layer_norm"), len(tok.labels)), tok)
    export_hf(tmp_path / "ln", tmp_path / "ln_hf")
    ln_pre = json.loads((tmp_path / "ln_hf" / "preprocessor_config.json").read_text())
    assert ln_pre["do_normalize"] is False and ln_pre["return_attention_mask"] is True


def test_import_transformers_folder_legacy_weight_norm_and_bin(tmp_path):
    """A folder written by transformers itself (old weight_g/weight_v names, pytorch_model.bin)."""
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(32,) * 7, vocab_size=9,
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                      do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    torch.manual_seed(2)
    hf = transformers.Wav2Vec2ForCTC(cfg).eval()
    state = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in hf.state_dict().items()}
    folder = tmp_path / "hf_legacy"
    folder.mkdir()
    cfg.save_pretrained(str(folder))
    torch.save(state, folder / "pytorch_model.bin")
    ckpt = read_checkpoint(folder)
    ours_cfg = lrasr_config_from_arch(ckpt.arch, Wav2Vec2Config.preset("tiny"))
    assert ours_cfg.layer_norm_first and ours_cfg.extractor_mode == "layer_norm" and ours_cfg.conv_bias
    ours = Wav2Vec2ForCTC(ours_cfg, 9).eval()
    report = load_pretrained_into(ours, ckpt)
    assert report.missing == [] and report.unexpected == []
    wave = torch.randn(1, 9000)
    with torch.no_grad():
        torch.testing.assert_close(ours(wave)[0], hf(wave).logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------ fairseq
def _to_fairseq(name: str, fine_tuned: bool) -> str:
    """canonical -> fairseq key, written out independently of lrasr.convert.keys (the test's oracle)."""
    rules = [
        ("feature_extractor.conv_layers.{i}.conv.", "feature_extractor.conv_layers.{i}.0."),
        ("feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.conv_layers.0.2."),
        ("encoder.feature_projection.projection.", "post_extract_proj."),
        ("encoder.feature_projection.layer_norm.", "layer_norm."),
        ("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g"),
        ("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v"),
        ("encoder.transformer.pos_conv_embed.conv.", "encoder.pos_conv.0."),
        ("encoder.transformer.layer_norm.", "encoder.layer_norm."),
        ("encoder.transformer.layers.{i}.attention.", "encoder.layers.{i}.self_attn."),
        ("encoder.transformer.layers.{i}.layer_norm.", "encoder.layers.{i}.self_attn_layer_norm."),
        ("encoder.transformer.layers.{i}.feed_forward.intermediate_dense.", "encoder.layers.{i}.fc1."),
        ("encoder.transformer.layers.{i}.feed_forward.output_dense.", "encoder.layers.{i}.fc2."),
        ("encoder.transformer.layers.{i}.final_layer_norm.", "encoder.layers.{i}.final_layer_norm."),
        ("mask_embedding", "mask_emb"), ("quantizer.codevectors", "quantizer.vars"),
    ]
    name = name.removeprefix("backbone.")
    if name.startswith("aux."):
        return "w2v_encoder.proj." + name[4:]
    for i in range(8):
        for src, dst in rules:
            s, d = src.format(i=i), dst.format(i=i)
            if name.startswith(s):
                name = d + name[len(s):]
                return ("w2v_encoder.w2v_model." + name) if fine_tuned else name
    return ("w2v_encoder.w2v_model." + name) if fine_tuned else name


def test_fairseq_pretrained_checkpoint(tmp_path):
    torch.manual_seed(3)
    cfg = tiny_cfg()
    src = Wav2Vec2ForPreTraining(cfg)
    state = {_to_fairseq(k, False): v.clone() for k, v in src.state_dict().items()}
    state["label_embs_concat"] = torch.zeros(3)  # present in some fairseq files, not used
    hydra_cfg = {"model": {"_name": "wav2vec2", "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] * 2",
                           "encoder_attention_heads": 2, "layer_norm_first": False, "latent_groups": 2}}
    path = tmp_path / "w2v.pt"
    torch.save({"model": state, "cfg": hydra_cfg, "optimizer_history": [{"lr": 1e-3}], "extra_state": {}}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "fairseq" and not ckpt.has_head
    built = lrasr_config_from_arch(ckpt.arch, Wav2Vec2Config.preset("tiny"))
    for name in ("conv_layers", "embed_dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel",
                 "pos_conv_groups", "final_dim", "codevector_dim", "num_codevectors_per_group"):
        assert getattr(built, name) == getattr(cfg, name), name
    dst = Wav2Vec2ForPreTraining(built)
    report = load_pretrained_into(dst, ckpt)
    assert report.missing == [] and report.unexpected == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_fairseq_fine_tuned_legacy_args_into_ctc(tmp_path):
    torch.manual_seed(4)
    src = Wav2Vec2ForCTC(tiny_cfg(), 12).eval()
    state = {_to_fairseq(k, True): v.clone() for k, v in src.state_dict().items()}
    args = argparse.Namespace(w2v_args=None, encoder_attention_heads=2, layer_norm_first=False)
    path = tmp_path / "ft.pt"
    torch.save({"model": state, "args": args}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.head_size == 12
    assert any("strides" in n for n in ckpt.notes)  # not stated in args: assumed, and said so
    dst = Wav2Vec2ForCTC(lrasr_config_from_arch(ckpt.arch, Wav2Vec2Config.preset("tiny")), 12).eval()
    load_pretrained_into(dst, ckpt)
    wave = torch.randn(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(dst(wave)[0], src(wave)[0], atol=0, rtol=0)


def test_fairseq_normalize_flag(tmp_path):
    """fairseq's task.normalize (hydra), args.normalize (legacy) and the pretraining run's setting
    inside a fine-tuned checkpoint's w2v_args set normalize_waveform; unstated, the recipe's stays."""
    torch.manual_seed(7)
    src = Wav2Vec2ForPreTraining(tiny_cfg())
    state = {_to_fairseq(k, False): v.clone() for k, v in src.state_dict().items()}
    model_cfg = {"_name": "wav2vec2", "encoder_attention_heads": 2, "layer_norm_first": False}

    def imported(name: str, ckpt: dict, base: str = "tiny") -> Wav2Vec2Config:
        torch.save({"model": state, **ckpt}, tmp_path / name)
        return model_config_from(tmp_path / name, Wav2Vec2Config.preset(base))

    assert imported("hydra.pt", {"cfg": {"model": model_cfg, "task": {"_name": "audio_pretraining",
                                                                      "normalize": True}}}).normalize_waveform
    assert not imported("hydra_raw.pt", {"cfg": {"model": model_cfg, "task": {"normalize": False}}},
                        base="large").normalize_waveform
    assert imported("legacy.pt", {"args": argparse.Namespace(encoder_attention_heads=2, normalize=True)}).normalize_waveform
    nested = {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": model_cfg, "task": {"normalize": True}}}}
    assert imported("nested.pt", {"cfg": nested}).normalize_waveform
    unstated = {"cfg": {"model": model_cfg}}
    assert not imported("unstated.pt", unstated).normalize_waveform
    assert imported("unstated.pt", unstated, base="large").normalize_waveform
    assert any("task.normalize" in n for n in read_checkpoint(tmp_path / "unstated.pt").notes)
    # the weights load into the model built from that config, flag and all
    cfg = imported("hydra.pt", {"cfg": {"model": model_cfg, "task": {"normalize": True}}})
    dst = Wav2Vec2ForPreTraining(cfg)
    report = load_pretrained_into(dst, tmp_path / "hydra.pt")
    assert report.missing == [] and report.unexpected == []


class NotAllowed:  # stands for fairseq's meters: a class whose unpickling could run code
    def __init__(self):
        self.x = 1


def test_fairseq_with_code_running_objects_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"mask_emb": torch.zeros(4)}, "extra_state": {"meter": NotAllowed()}}, path)
    with pytest.raises(LrasrError, match="refusing to unpickle.*NotAllowed"):
        read_checkpoint(path)


# -------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs(ctc_folder, tmp_path):
    folder, model, tok = ctc_folder
    with pytest.raises(LrasrError, match="does not exist"):
        read_checkpoint(tmp_path / "nowhere")
    wider = Wav2Vec2ForCTC(tiny_cfg(ffn_dim=96), len(tok.labels))
    with pytest.raises(LrasrError, match=r"feed_forward.intermediate_dense.weight: checkpoint \(64, 32\) vs model \(96, 32\)"):
        load_pretrained_into(wider, folder)
    # a new vocabulary: the head is left out on request, everything else loads
    other = Wav2Vec2ForCTC(tiny_cfg(), len(tok.labels) + 3)
    report = load_pretrained_into(other, folder, skip_head=True)
    assert report.skipped == ["aux.bias", "aux.weight"] and "aux.weight" not in report.loaded
    assert len(report.loaded) == len(other.state_dict()) - 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(LrasrError, match="no config.json"):
        read_checkpoint(tmp_path / "empty")
    with pytest.raises(LrasrError, match="not a checkpoint"):
        read_checkpoint(folder / "config.json")
    # the exported model folder still loads with lrasr's own loader
    m, t = load_ctc_model(folder)
    assert t.labels == tok.labels
    # export never deletes the model itself or a folder of other files; an earlier export is replaced
    for target in (folder, folder.parent):
        with pytest.raises(LrasrError, match="would replace the model"):
            export_hf(folder, target)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(LrasrError, match="refusing to replace"):
        export_hf(folder, busy)
    assert (busy / "notes.txt").read_text() == "mine" and (folder / "model.safetensors").is_file()
    export_hf(folder, tmp_path / "again")
    export_hf(folder, tmp_path / "again")


def test_import_transformers_pretraining_model_quantizer_included(tmp_path):
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4, codevector_dim=16, proj_codevector_dim=12,
                                      num_codevectors_per_group=8, num_codevector_groups=2)
    torch.manual_seed(5)
    hf = transformers.Wav2Vec2ForPreTraining(cfg)
    hf.save_pretrained(str(tmp_path / "hfpre"))
    ours = Wav2Vec2ForPreTraining(model_config_from(tmp_path / "hfpre", Wav2Vec2Config.preset("tiny")))
    report = load_pretrained_into(ours, tmp_path / "hfpre")
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(ours.quantizer.codevectors, hf.quantizer.codevectors)
    assert torch.equal(ours.final_proj.weight, hf.project_hid.weight)
    assert torch.equal(ours.mask_embedding, hf.wav2vec2.masked_spec_embed)
    # a pretraining checkpoint has no CTC head: fine-tuning builds a new one
    assert not read_checkpoint(tmp_path / "hfpre").has_head
    # no preprocessor_config.json: the recipe's choice stands, and the import says so
    assert not model_config_from(tmp_path / "hfpre", Wav2Vec2Config.preset("tiny")).normalize_waveform
    assert any("do_normalize" in n for n in read_checkpoint(tmp_path / "hfpre").notes)
    # an XLS-R/MMS-style folder: transformers' own feature extractor config with do_normalize
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(str(tmp_path / "hfpre"))
    assert model_config_from(tmp_path / "hfpre", Wav2Vec2Config.preset("tiny")).normalize_waveform
    # a file without the key means transformers' default, which normalizes
    (tmp_path / "hfpre" / "preprocessor_config.json").write_text('{"feature_size": 1}')
    assert model_config_from(tmp_path / "hfpre", Wav2Vec2Config.preset("tiny")).normalize_waveform
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(str(tmp_path / "hfpre"))
    assert not model_config_from(tmp_path / "hfpre", Wav2Vec2Config.preset("large")).normalize_waveform
