"""Learning-rate schedules as multipliers of the peak LR: pure functions of the update number."""

from __future__ import annotations

from typing import Any, Callable


def polynomial_decay(step: int, warmup_steps: int, total_steps: int, power: float = 1.0,
                     end_scale: float = 0.0) -> float:
    """Linear warmup from 0 to 1 over ``warmup_steps``, then (1 - progress)^power decay to ``end_scale``.

    As in wav2vec 2.0 pretraining (32k warmup, decay to 400k updates). ``step`` is 0-based: the
    multiplier used for update ``step + 1``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return end_scale + (1.0 - end_scale) * (1.0 - progress) ** power


def tri_stage(step: int, total_steps: int, ratios: tuple[float, float, float] = (0.1, 0.4, 0.5),
              final_scale: float = 0.05, init_scale: float = 0.01) -> float:
    """Linear warmup from ``init_scale`` to 1, hold at 1, exponential decay to ``final_scale``.

    Stage lengths are ``ratios`` of ``total_steps`` (fine-tuning: 10% / 40% / 50%). After the decay
    stage the multiplier stays at ``final_scale``.
    """
    total = sum(ratios) or 1.0
    warmup = int(total_steps * ratios[0] / total)
    hold = int(total_steps * ratios[1] / total)
    decay = max(1, total_steps - warmup - hold)
    if step < warmup:
        return init_scale + (1.0 - init_scale) * step / warmup
    if step < warmup + hold:
        return 1.0
    progress = min(1.0, (step - warmup - hold) / decay)
    # exponential interpolation from 1 to final_scale, as fairseq's tri-stage scheduler does
    return final_scale ** progress


def default_warmup(total_steps: int) -> int:
    """8% of the updates (32k of 400k in the paper)."""
    return max(1, round(0.08 * total_steps))


def from_config(cfg: Any, total_steps: int) -> Callable[[int], float]:
    """The schedule a training section asks for: tri-stage when it has ``tri_stage``, else warmup+decay."""
    if getattr(cfg, "tri_stage", None) is not None:
        ratios = tuple(cfg.tri_stage)
        final = float(getattr(cfg, "final_lr_scale", 0.05))
        return lambda step: tri_stage(step, total_steps, ratios, final)  # type: ignore[arg-type]
    warmup = getattr(cfg, "warmup_steps", None)
    warmup = default_warmup(total_steps) if warmup is None else int(warmup)
    return lambda step: polynomial_decay(step, warmup, total_steps)
