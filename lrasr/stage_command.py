"""A stage run by its own command (`lrasr prepare RECIPE`, `lrasr pretrain`, `lrasr finetune`) recorded as
`lrasr run` records it: a later `lrasr run` skips it when nothing changed (it used to make it again, as
it could not know what the outputs were made from), and resumes it when the command was interrupted."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from lrasr.fingerprint import HashCache, combine
from lrasr.io import write_json_atomic
from lrasr.recipe import Recipe
from lrasr.runner import RUNNING, STAMP, compute_fingerprint, read_stamp, write_stamp


@contextmanager
def stage_command(recipe: Recipe, stage: str, complete: bool = True) -> Iterator[dict[str, Any]]:
    """Around a stage command: its stamp is dropped first (the outputs are about to change). When the run
    uses the recipe's own settings (``complete``: no ``--max-steps``, no ``--shard``) the inputs are
    fingerprinted before it starts, exactly as `lrasr run` does, the stage is marked running, and on
    success stamped. Put the stage's summary in the yielded dict's ``summary`` key to keep it in the
    stamp. Under torchrun only the main process touches the markers."""
    from lrasr.train.distributed import env_info

    out = recipe.stage_dir(stage)
    record: dict[str, Any] = {}
    parts = None
    if env_info().is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / STAMP).unlink(missing_ok=True)
        if complete and stage in recipe.stages():
            cache = HashCache(recipe.workdir / ".cache" / "file_hashes.json")
            parts = compute_fingerprint(recipe, stage, {s: read_stamp(recipe, s) for s in recipe.stages()}, cache)
            cache.save()
            write_json_atomic(out / RUNNING, {"fingerprint": combine(parts), "parts": parts, "started": time.time()})
    start = time.time()
    yield record
    if parts is not None:
        write_stamp(out, parts, time.time() - start, record.get("summary"))
