"""`lrasr finetune` under torchrun's environment: two gloo CPU processes (DistributedDataParallel)
train the same weights as one process on the combined batch -- through the unfreeze at
``freeze_steps`` (the DDP wrapper is rebuilt) and with layerdrop and time/channel masking on
(``find_unused_parameters``; the RNG is reseeded per micro-batch, so the draws do not depend on the
rank) -- only rank 0 writes, and the command shuts the process group down.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.multiprocessing as mp
import yaml

from conftest import espeak
from lrasr.audio.decode import load
from lrasr.data.manifest import write_manifest
from lrasr.text.tokenizer import CharTokenizer

SENTENCES = ["അമ്മ വന്നു", "കടൽ നീല", "മരം വലുത്", "ആന വരുന്നു"]
# the narrow model of test_finetune (2 transformer layers)
MODEL = {"preset": "tiny", "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
         "embed_dim": 64, "ffn_dim": 128, "pos_conv_kernel": 16, "pos_conv_groups": 4, "final_dim": 32,
         "codevector_dim": 32, "num_codevectors_per_group": 16}
SECONDS = 1.6  # every clip this long: each update group holds exactly two clips


def _prepare(root: Path) -> tuple[Path, Path]:
    """(prepare folder like `lrasr prepare` writes it, an lrasr CTC model folder to start from)."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC
    from lrasr.model.io import save_model_dir

    prep, audio = root / "prepare", root / "audio"
    audio.mkdir(parents=True)
    n = int(SECONDS * 16000)
    rows = []
    for s, text in enumerate(SENTENCES):
        for v, (speed, pitch) in enumerate([(170, 40), (190, 60)]):
            wave = load(espeak(text, audio / "raw.wav", speed=speed, pitch=pitch), 16000)[:n]
            name = f"u{s}_{v}.wav"
            sf.write(audio / name, np.pad(wave, (0, n - len(wave))), 16000)
            rows.append({"id": f"u{s}_{v}", "audio": str(audio / name), "duration": n / 16000, "text": text,
                         "raw_text": text, "speaker": f"spk{v}", "source": "espeak"})
    write_manifest(rows, prep / "train" / "manifest.tsv")
    write_manifest(rows[::3], prep / "dev" / "manifest.tsv")
    tokenizer = CharTokenizer.from_texts(SENTENCES)
    tokenizer.save(prep / "tokenizer")
    torch.manual_seed(1)
    init = save_model_dir(root / "init", Wav2Vec2ForCTC(Wav2Vec2Config.from_recipe(MODEL), len(tokenizer.labels)),
                          tokenizer)
    return prep, init


def _recipe(root: Path, init: Path) -> Path:
    finetune = {"model": MODEL, "init_from": str(init), "max_steps": 4, "freeze_steps": 2, "lr": 2e-3,
                # one process: 2 micro-batches of one clip per update; two: one each
                "batch_seconds": 2 * SECONDS + 0.1, "max_device_batch_seconds": SECONDS + 0.1,
                "eval_every": 100, "log_every": 1, "save_every": 100, "mask_time_prob": 0.3,
                "mask_time_length": 4, "mask_channel_prob": 0.2, "layerdrop": 0.5, "device": "cpu"}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "ddp", "language": "ml", "workdir": str(root / "unused"),
                                    "finetune": finetune}, allow_unicode=True), encoding="utf-8")
    return path


def _worker(rank: int, port: int, recipe: str, workdirs: list[str], result: str) -> None:
    """One torchrun-like rank running the `lrasr finetune` command, each rank on its own workdir
    (same prepared data): whatever rank 1 wrote would land in its own folder."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    from datetime import timedelta

    import torch.distributed as dist
    from typer.testing import CliRunner

    import lrasr.train.distributed as D
    from lrasr.cli import app

    D.COLLECTIVE_TIMEOUT = timedelta(seconds=300)  # a hang fails the test instead of stalling the suite

    out = CliRunner().invoke(app, ["finetune", recipe, "--workdir", workdirs[rank], "--no-resume"])
    Path(f"{result}.{rank}").write_text(json.dumps({
        "exit": out.exit_code, "output": out.output[-3000:], "error": repr(out.exception),
        "initialized": dist.is_initialized()}))


def test_two_processes_finetune_like_one_on_the_combined_batch(tmp_path):
    from safetensors.torch import load_file

    from lrasr.recipe import load_recipe
    from lrasr.stages.finetune import run_finetune

    prep, init = _prepare(tmp_path / "data")
    recipe = _recipe(tmp_path, init)
    work = [tmp_path / name for name in ("rank0", "rank1", "single")]
    for w in work:
        shutil.copytree(prep, w / "prepare")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = str(tmp_path / "rank")
    mp.spawn(_worker, args=(port, str(recipe), [str(w) for w in work[:2]], result), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{result}.{r}").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["exit"] == 0, (r["error"], r["output"])
        assert r["initialized"] is False  # the command destroyed the process group
    assert "finetune" in ranks[0]["output"] and ranks[1]["output"].strip() == ""  # summary on rank 0 only
    assert not (work[1] / "finetune").exists()  # rank 1 wrote nothing
    two = json.loads((work[0] / "finetune" / "summary.json").read_text())
    assert two["processes"] == 2 and two["steps"] == 4 and two["dev_wer"] is not None

    one = run_finetune(load_recipe(recipe, {"workdir": str(work[2])}), device="cpu", resume=False)
    assert one["processes"] == 1 and one["steps"] == 4
    w2 = load_file(str(work[0] / "finetune" / "model" / "model.safetensors"))
    w1 = load_file(str(work[2] / "finetune" / "model" / "model.safetensors"))
    w0 = load_file(str(init / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6, msg=key)
    # it trained through the unfreeze: the head and the transformer moved, the feature encoder did not
    moved = {k.removeprefix("backbone.").split(".")[0] for k in w1 if not torch.equal(w0[k], w1[k])}
    assert moved == {"aux", "encoder", "mask_embedding"}
    assert two["train_loss"] == one["train_loss"] or abs(two["train_loss"] - one["train_loss"]) < 1e-4 * one["train_loss"]
    assert two["dev_cer"] == one["dev_cer"]
