"""`lrasr finetune`: CTC fine-tuning of a wav2vec 2.0 backbone on the labeled train split.

The practice of the wav2vec 2.0 paper on the shared training loop (``lrasr.train.loop``): a linear CTC
head over the tokenizer's labels (blank first); the feature encoder frozen throughout; the rest of
the network frozen for the first ``freeze_steps`` updates (only the head learns); tri-stage LR;
(from scratch, ``init_from: none``, nothing is pretrained to protect: everything trains from update 0);
time and channel masking and layerdrop in the model; CTC in float32 outside autocast with
``zero_infinity``. Dev evaluation (loss, greedy WER/CER) every ``eval_every`` updates keeps the best
weights by ``finetune.metric`` and stops early when asked.

Outputs under ``<workdir>/finetune/``: ``model/`` (weights, config, tokenizer, text.json: a
self-contained model folder), ``dev/`` (per-utterance/speaker report of the best model),
``metrics.csv``, ``tensorboard/``, ``curves.png``, ``skipped.tsv`` (utterances not trained on, with
the reason), ``init.json`` (what was loaded from ``init_from``), ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lrasr.audio.decode import SAMPLE_RATE
from lrasr.data.manifest import RejectLog, audio_paths, read_manifest, write_manifest
from lrasr.errors import LrasrError, StageError
from lrasr.io import write_json_atomic
from lrasr.report import warn
from lrasr.text.normalize import recipe_normalizer

HEAD = "aux."


# ----------------------------------------------------------------------------------------- model
def resolve_init(recipe: Any) -> Path | None:
    """The checkpoint ``finetune.init_from`` names (None = from scratch)."""
    value = recipe.finetune.init_from
    if value is None:
        value = "pretrain" if recipe.pretrain is not None else "none"
    if value == "none":
        return None
    if value == "pretrain":
        path = recipe.stage_dir("pretrain") / "model"
        if not (path / "config.json").is_file():
            raise LrasrError("finetune.init_from is 'pretrain' but there is no pretrained model: run "
                             "`lrasr pretrain` first, or set finetune.init_from to a checkpoint or 'none'", path)
        return path
    path = Path(value)
    if not path.exists():
        raise LrasrError("finetune.init_from does not exist: give a model folder (config.json + weights), "
                         "a fairseq .pt, 'pretrain' or 'none'", path)
    return path


def finetune_config(base: Any, f: Any, freeze_encoder: bool) -> Any:
    """``base`` model config with the recipe's fine-tuning masks/layerdrop; the feature encoder run
    without autograd when ``freeze_encoder``, else trained at full rate."""
    from lrasr.model.config import Wav2Vec2Config

    data = base.to_dict()
    data.update(mask_time_prob=f.mask_time_prob, mask_time_length=f.mask_time_length,
                mask_channel_prob=f.mask_channel_prob, layerdrop=f.layerdrop,
                feature_grad_mult=0.0 if freeze_encoder else 1.0,
                # 64 channels for BASE (d/12); narrow models get proportionally narrower masks
                mask_channel_length=f.mask_channel_length or max(1, min(64, base.embed_dim // 12)))
    return Wav2Vec2Config.from_dict(data, source="finetune model config")


def build_model(recipe: Any, tokenizer: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The CTC model to fine-tune and a JSON-able record of where its weights came from."""
    from lrasr.convert import load_pretrained_into, read_checkpoint
    from lrasr.convert.arch import lrasr_config_from_arch
    from lrasr.convert.hf import labels_match
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC

    f = recipe.finetune
    vocab = len(tokenizer.labels)
    base = Wav2Vec2Config.from_recipe(f.model)
    source = resolve_init(recipe)
    torch.manual_seed(recipe.seed)  # the same initial head (and scratch weights) for the same recipe
    # default: a checkpoint's feature encoder stays frozen (the paper); from scratch there is nothing to
    # protect, so it trains too
    freeze = f.freeze_feature_encoder if f.freeze_feature_encoder is not None else source is not None
    if source is None:
        cfg = finetune_config(base, f, freeze)
        return Wav2Vec2ForCTC(cfg, vocab), {"init_from": "none", "model": f.model, "freeze_feature_encoder": freeze}
    ckpt = read_checkpoint(source)
    cfg = finetune_config(lrasr_config_from_arch(ckpt.arch, base), f, freeze)
    model = Wav2Vec2ForCTC(cfg, vocab)
    skip_head = False
    if ckpt.has_head:
        if ckpt.head_size != vocab:
            problem = f"its CTC head has {ckpt.head_size} outputs, the tokenizer {vocab} labels"
        elif ckpt.labels is None:
            problem = "it does not name the labels of its CTC head"
        else:
            problem = labels_match(ckpt.labels, tokenizer.labels)
        if problem is not None:
            if not f.reinit_head:
                raise LrasrError(f"the tokenizer does not match this checkpoint ({problem}); set "
                                 "finetune.reinit_head: true to train a new CTC head", source)
            skip_head = True
    report = load_pretrained_into(model, ckpt, skip_head=skip_head)
    reinit = reinit_top_layers_(model, f.reinit_layers, source)
    info = {"init_from": str(source), "freeze_feature_encoder": freeze, **report.summary(),
            "reinit_layers": reinit}
    return model, info


@torch.no_grad()
def reinit_top_layers_(model: torch.nn.Module, count: int, source: Any) -> list[int]:
    """Give the last ``count`` transformer layers of ``model`` fresh weights, as a model built from
    scratch has (fairseq's N(0, 0.02) linears, unit layer norms); returns their indices."""
    from torchaudio.models.wav2vec2 import components

    layers = model.backbone.encoder.transformer.layers
    if count > len(layers):
        raise LrasrError(f"finetune.reinit_layers is {count} but the checkpoint has {len(layers)} transformer "
                         "layers; use a smaller number", source)
    chosen = list(range(len(layers) - count, len(layers)))
    for index in chosen:
        for module in layers[index].modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.reset_parameters()
        layers[index].apply(components._init_transformer_params)
    return chosen


# ------------------------------------------------------------------------------------------ data
def ctc_min_frames(ids: list[int]) -> int:
    """Frames a CTC alignment of ``ids`` needs: one per label plus a blank between repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def usable_split(manifest: Path, tokenizer: Any, model_cfg: Any, rejects: RejectLog, split: str
                 ) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Rows of ``manifest`` that CTC can train on (absolute audio paths), and their label ids.

    Left out and logged in ``rejects``: empty transcripts and CTC-infeasible rows (more labels, plus
    repeats, than the feature encoder makes frames).
    """
    frame = read_manifest(manifest, required=("id", "audio", "duration", "text"))
    frame["audio"] = [str(p) for p in audio_paths(frame, manifest)]
    keep, targets = [], {}
    for k, row in enumerate(frame.itertuples(index=False)):
        text = str(row.text).strip()
        ids = tokenizer.encode(text) if text else []
        if not ids:
            rejects.add(manifest, f"empty transcript: {split}", id=row.id, line=k + 2)
            continue
        frames = model_cfg.num_frames(int(float(row.duration) * SAMPLE_RATE))
        need = ctc_min_frames(ids)
        if need > frames:
            rejects.add(manifest, f"ctc infeasible: {split}: {need} labels+repeats > {frames} frames",
                        id=row.id, line=k + 2)
            continue
        keep.append(k)
        targets[str(row.id)] = ids
    return frame.iloc[keep].reset_index(drop=True), targets


class FinetuneTask:
    """The fine-tuning side of the training-loop protocol (``lrasr.train.loop``)."""

    name = "finetune"
    best_mode = "min"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, targets: dict[str, list[int]],
                 freeze_steps: int, seed: int, metric: str, dev: pd.DataFrame | None = None,
                 dev_targets: dict[str, list[int]] | None = None, normalizer: Any = None,
                 eval_batch_seconds: float = 60.0, freeze_feature_encoder: bool = True,
                 reinit_layers: list[int] | None = None):
        self.model, self.tokenizer, self.train_dataset = model, tokenizer, train_dataset
        # trained from the first update: the new head and any re-initialized layers (new weights have
        # nothing to protect, and a frozen random layer would feed the head noise for freeze_steps)
        self.fresh = (HEAD, *(f"encoder.transformer.layers.{i}." for i in reinit_layers or []))
        self.targets, self.freeze_steps, self.seed = targets, freeze_steps, seed
        self.metric = f"dev_{metric}"
        # the recipe's metric with ties (e.g. WER stuck at 100 % early on) broken by the dev loss
        self.best_metric = "dev_selection"
        self.dev, self.dev_targets, self.normalizer = dev, dev_targets or {}, normalizer
        self.eval_batch_seconds = eval_batch_seconds
        self.freeze_feature_encoder = freeze_feature_encoder
        self._dev_waves: list[np.ndarray] | None = None
        self._frozen: bool | None = None
        self.last_report = None
        if dev is not None and len(dev):
            self.evaluate = self._evaluate  # the loop evaluates only tasks that have this hook

    @property
    def find_unused_parameters(self) -> bool:
        """Whether a trainable parameter can miss its gradient in a forward pass (DDP must then look
        for it): layerdrop; no time masking (the mask embedding is unused); a feature encoder that
        trains but runs without autograd (``feature_grad_mult`` 0)."""
        cfg = self.model.cfg
        return (cfg.layerdrop > 0 or cfg.mask_time_prob <= 0
                or (cfg.feature_grad_mult == 0 and not self.freeze_feature_encoder))

    def on_step(self, step: int) -> None:
        """Feature encoder frozen unless configured otherwise; before ``freeze_steps`` only the head
        and re-initialized layers train."""
        frozen = step < self.freeze_steps
        if frozen == self._frozen:
            return
        self._frozen = frozen
        for name, param in self.model.named_parameters():
            if ".feature_extractor." in f".{name}":
                param.requires_grad_(not self.freeze_feature_encoder and not frozen)
            else:
                param.requires_grad_(not frozen or name.split("backbone.")[-1].startswith(self.fresh))

    def compute_loss(self, model: torch.nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float], int]:
        targets = [self.targets[i] for i in batch.ids]
        logits, frames = model(batch.waveforms, batch.lengths)
        loss, tokens = ctc_loss_sum(logits, frames, targets)
        return loss, {"loss_per_label": float(loss.detach()) / max(1, tokens)}, len(targets)

    def _evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        metrics, report = self.dev_metrics(model)
        self.last_report = report
        return metrics

    def dev_metrics(self, model: torch.nn.Module) -> tuple[dict[str, float], Any]:
        """Dev loss (feasible utterances) and greedy WER/CER (all of them), plus the full report."""
        from lrasr.audio.decode import load
        from lrasr.decode.greedy import greedy_decode
        from lrasr.evaluate import forward_batches, score

        assert self.dev is not None
        if self._dev_waves is None:
            self._dev_waves = [load(p, SAMPLE_RATE) for p in self.dev["audio"]]
        device = next(model.parameters()).device
        ids = [str(i) for i in self.dev["id"]]
        hyps = [""] * len(ids)
        loss_sum, counted = 0.0, 0
        for idx, logits, frames in forward_batches(model, self._dev_waves, device, self.eval_batch_seconds):
            for row, i in enumerate(idx):
                hyps[i] = greedy_decode(logits[row, : int(frames[row])], self.tokenizer)
            targets = [self.dev_targets.get(ids[i]) for i in idx]
            feasible = [r for r, t in enumerate(targets) if t and ctc_min_frames(t) <= int(frames[r])]
            if feasible:
                loss, _ = ctc_loss_sum(logits[feasible], frames[feasible], [targets[r] for r in feasible])
                loss_sum, counted = loss_sum + float(loss), counted + len(feasible)
        speakers = list(self.dev["speaker"]) if "speaker" in self.dev.columns else None
        report = score(list(self.dev["text"]), hyps, self.normalizer, ids=ids, speakers=speakers)
        metrics = {"dev_loss": loss_sum / counted if counted else float("nan"), "dev_wer": report.wer,
                   "dev_cer": report.cer}
        metrics["dev_selection"] = metrics[self.metric] + selection_tie_break(
            metrics["dev_loss"], report.words if self.metric == "dev_wer" else report.chars)
        return metrics, report


def selection_tie_break(loss: float, units: int) -> float:
    """A term that orders equal WERs (CERs) by dev loss and never outweighs one error.

    The smallest change of the metric is one error in ``units`` reference words (characters); the
    term stays below half of that whatever the loss, so selection is by the metric first.
    """
    if loss != loss or loss < 0:  # NaN (no feasible dev utterance): no tie-break
        return 0.0
    return 0.5 / (max(units, 1) + 1) * loss / (1.0 + loss)


def ctc_loss_sum(logits: torch.Tensor, frames: torch.Tensor, targets: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Summed CTC loss of ``logits`` [B, F, V] with valid ``frames`` [B] against label-id lists.

    Computed in float32 with autocast off (fp16/bf16 CTC overflows), blank 0, ``zero_infinity`` so
    an utterance the filter missed (audio shorter than its manifest said) adds 0, not inf.
    """
    device = logits.device
    with torch.autocast(device_type=device.type, enabled=False):
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [F, B, V]
        flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long, device=device)
        lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long, device=device)
        loss = torch.nn.functional.ctc_loss(log_probs, flat, frames.to(device).long(), lengths, blank=0,
                                            reduction="sum", zero_infinity=True)
    return loss, int(lengths.sum())


# ----------------------------------------------------------------------------------------- stage
def run_finetune(recipe: Any, device: str | None = None, resume: bool = True, max_steps: int | None = None) -> dict:
    """Fine-tune per ``recipe.finetune``; returns a JSON-able summary (also ``finetune/summary.json``)."""
    from lrasr.evaluate import TEXT_FILE, write_report
    from lrasr.model.io import save_model_dir
    from lrasr.text.tokenizer import load_tokenizer
    from lrasr.train.batching import AudioDataset
    from lrasr.train.checkpoint import load_weights
    from lrasr.train.distributed import env_info
    from lrasr.train.loop import train

    f = recipe.finetune
    if f is None:
        raise LrasrError("the recipe has no finetune section", recipe.source)
    out = recipe.stage_dir("finetune")
    prep = recipe.stage_dir("prepare")
    tok_dir = prep / "tokenizer"
    if not tok_dir.is_dir():
        raise StageError("no tokenizer: run `lrasr prepare` first", tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    if tokenizer.blank_id != 0:
        raise StageError("the tokenizer's blank must be label 0 for CTC", tok_dir)
    model, init = build_model(recipe, tokenizer)
    # under torchrun every process gets here; only rank 0 writes (the others build the same rows)
    main = env_info().is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "init.json", init)

    rejects = RejectLog()
    train_rows, targets = usable_split(prep / "train" / "manifest.tsv", tokenizer, model.cfg, rejects, "train")
    if len(train_rows) == 0:
        if main:
            rejects.write(out / "skipped.tsv")
        raise StageError(f"the train split has no usable utterances ({_reasons(rejects)}); see {out / 'skipped.tsv'}",
                         prep / "train" / "manifest.tsv")
    dev_rows, dev_targets, dev_unscored = dev_split(prep / "dev" / "manifest.tsv", tokenizer, model.cfg, main)
    if main:
        write_manifest(train_rows, out / "data" / "train.tsv")  # what was trained on, for the record
        rejects.write(out / "skipped.tsv")

    total = int(max_steps or f.max_steps)
    scratch = init["init_from"] == "none"
    freeze = 0 if scratch else (f.freeze_steps if f.freeze_steps is not None else round(0.1 * total))
    dataset = AudioDataset([("train", train_rows)], seed=recipe.seed)
    task = FinetuneTask(model, tokenizer, dataset, targets, freeze, recipe.seed, f.metric, dev_rows, dev_targets,
                        recipe_normalizer(recipe), eval_batch_seconds=f.max_device_batch_seconds,
                        freeze_feature_encoder=init["freeze_feature_encoder"],
                        reinit_layers=init.get("reinit_layers"))
    train_cfg = f.model_copy(update={"lr": f.peak_lr(model.cfg.embed_dim)})
    result = train(task, train_cfg, out, device=device, resume=resume, max_steps=total)

    if not main:  # under torchrun only rank 0 writes the model and reports
        return {"steps": result.steps, "rank": env_info().rank}
    # still on the training device: the final dev report is computed as the evaluations that chose
    # the best weights were (bf16 on a GPU), not again in float32 on the CPU (slow for a real dev set)
    model = task.model
    if result.best_path is not None and (result.best_path / "model.safetensors").is_file():
        load_weights(model, result.best_path / "model.safetensors", device=next(model.parameters()).device)
    model.eval()
    save_model_dir(out / "model", model, tokenizer)
    write_json_atomic(out / "model" / TEXT_FILE, {"language": recipe.language,
                                                 "text": recipe.prepare.text.model_dump(mode="json")})
    summary: dict[str, Any] = {
        "steps": result.steps, "processes": result.world_size, "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "train_utterances": len(train_rows), "train_hours": round(float(train_rows["duration"].sum()) / 3600, 4),
        "skipped": rejects.counts(), "loader_skipped": dict(getattr(dataset, "skipped", {})),
        "nonfinite_skipped": result.nonfinite_skipped, "init_from": init["init_from"],
        "lr": train_cfg.lr, "train_loss": result.final_metrics.get("loss"), "cpu_minutes": round(result.cpu_seconds / 60, 2),
        "model": str(out / "model"),
    }
    if dev_rows is not None:
        metrics, report = task.dev_metrics(model)
        write_report(report, out / "dev")
        summary.update({k: (None if v != v else v) for k, v in metrics.items()})
        summary["dev_utterances"] = len(dev_rows)
        summary["dev_without_transcript"] = dev_unscored
    write_json_atomic(out / "summary.json", summary)
    return summary


def dev_split(manifest: Path, tokenizer: Any, model_cfg: Any, main: bool = True
              ) -> tuple[pd.DataFrame | None, dict[str, list[int]], int]:
    """(dev rows to score, label ids of the CTC-feasible ones, count of rows without a transcript).

    Every dev utterance with a transcript is scored (greedy WER/CER); the CTC-infeasible ones (too
    short for their transcript) only leave the dev loss. None when there is nothing to score.
    """
    if not manifest.is_file():
        if main:
            warn("no dev split: no dev evaluation, the last weights are kept")
        return None, {}, 0
    feasible, targets = usable_split(manifest, tokenizer, model_cfg, RejectLog(), "dev")
    full = read_manifest(manifest, required=("id", "audio", "duration", "text"))
    full["audio"] = [str(p) for p in audio_paths(full, manifest)]
    has_text = full["text"].astype(str).str.strip() != ""
    unscored = int((~has_text).sum())
    if not has_text.any():
        if main:
            warn("no dev utterance has a transcript: no dev evaluation, the last weights are kept")
        return None, {}, unscored
    if main and unscored:
        warn(f"{unscored} dev utterance(s) without a transcript are not scored")
    if main and len(feasible) < int(has_text.sum()):
        warn(f"{int(has_text.sum()) - len(feasible)} dev utterance(s) are too short for their transcript (CTC-"
             "infeasible): scored for WER/CER, left out of the dev loss"
             + (" (no dev loss at all)" if len(feasible) == 0 else ""))
    return full[has_text].reset_index(drop=True), targets, unscored


def _reasons(rejects: RejectLog) -> str:
    return ", ".join(f"{n} {k}" for k, n in rejects.counts().items()) or "the manifest is empty"
