"""Command-line interface: a thin layer over importable stage functions.

Each area registers its commands on the shared ``app`` in its own module.
"""

from lrasr.cli.app import app
from lrasr.cli import recipe_cmd, prepare_cmd, train_cmd, decode_cmd, run_cmd  # noqa: F401  (register commands)

__all__ = ["app"]
