"""wav2vec 2.0 for lrasr.

- ``config.Wav2Vec2Config``: architecture, pretraining-loss and masking fields; presets tiny/base/large.
- ``backbone``: torchaudio ``Wav2Vec2Model`` built from a config (SDPA attention with key-padding masks).
- ``masking``: fairseq-style span masks, channel masks, distractor sampling.
- ``quantizer.GumbelQuantizer``, ``losses``: the contrastive task.
- ``pretraining.Wav2Vec2ForPreTraining``, ``ctc.Wav2Vec2ForCTC``: the two models.
- ``io``: model folders (model.safetensors + config.json + tokenizer).
- ``hf_names``: parameter-name and config correspondence with transformers.
"""
