"""lrasr: speech recognition for languages with almost no transcribed audio.

Stages (each an importable function, the CLI is a thin layer over them):
prepare -> pretrain -> finetune -> lm -> evaluate, plus transcribe.
"""

__version__ = "0.1.0"
