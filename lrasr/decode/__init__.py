"""Decoding: KenLM language models, greedy and beam-search CTC decoding, long-audio transcription.

``lm`` builds and validates LM folders; ``greedy`` and ``beam`` turn log-probabilities into
``types.Hypothesis`` (text + word times); ``chunking`` splits long recordings at VAD silences;
``acoustic`` runs a model folder in batches; ``transcribe`` streams files through all of it;
``formats``/``output`` write txt, jsonl, tsv, srt and vtt; ``tune`` scores splits and grid-searches
the LM weights.
"""
