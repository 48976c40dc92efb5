"""Checkpoint interoperability: import transformers folders and fairseq ``.pt`` files, export to transformers.

- ``read_checkpoint(path) -> Checkpoint`` (canonical weights, architecture, head labels),
- ``load_pretrained_into(model, path_or_checkpoint, skip_head=False) -> LoadReport``,
- ``model_config_from(path_or_checkpoint, base_cfg)``: an lrasr config of the checkpoint's shape,
- ``export_hf(model_dir, out_dir)`` (``lrasr export --format hf``).
"""

from lrasr.convert.checkpoint import (Checkpoint, LoadReport, load_pretrained_into, model_config_from,
                                      read_checkpoint)
from lrasr.convert.hf import export_hf

__all__ = ["Checkpoint", "LoadReport", "load_pretrained_into", "model_config_from", "read_checkpoint", "export_hf"]
