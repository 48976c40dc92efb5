"""Command-line interface: a thin layer over importable stage functions.

Each area registers its commands on the shared ``app`` in its own module.
"""

from lrasr.cli.app import app
from lrasr.cli import (  # noqa: F401  (importing registers the commands, in help order)
    prepare_cmd,
    pretrain_cmd,
    finetune_cmd,
    decode_cmd,
    run_cmd,
    data_cmd,
    recipe_cmd,
)

__all__ = ["app"]
