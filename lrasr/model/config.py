"""wav2vec 2.0 model configuration: one dataclass, three presets, recipe overrides.

Field names follow fairseq's ``Wav2Vec2Config`` where one exists (``final_dim``, ``logit_temp``,
``latent_temp``...) so that numbers can be compared with the paper's configs; defaults are the
published BASE values (../shared/REFERENCE.md). Training-loop settings (learning rate, batch seconds)
are not model fields: they live in ``lrasr.recipe``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from lrasr.errors import LrasrError

ConvLayers = list[tuple[int, int, int]]  # (channels, kernel, stride) per conv


def _default_convs(channels: int = 512) -> ConvLayers:
    # 7 convs, total stride 5*2^6 = 320 samples (20 ms at 16 kHz), receptive field 400 samples (25 ms)
    return [(channels, 10, 5)] + [(channels, 3, 2)] * 4 + [(channels, 2, 2)] * 2


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_problems(data: dict[str, Any]) -> list[str]:
    """Scalar fields of the wrong type (``embed_dim: "x"``, ``dropout: yes``), named, instead of a
    Python error from deep inside validation. Integral floats pass for ints (YAML ``768.0``)."""
    out = []
    for f in dataclasses.fields(Wav2Vec2Config):
        if f.name not in data or f.default is dataclasses.MISSING:
            continue
        value, default = data[f.name], f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
            if ok:
                data[f.name] = int(value)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                data[f.name] = float(value)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            out.append(f"{f.name} must be {_KINDS[type(default)]}, got {value!r}")
    return out


@dataclass
class Wav2Vec2Config:
    # ---- feature encoder (waveform -> latent frames)
    extractor_mode: Literal["group_norm", "layer_norm"] = "group_norm"
    conv_layers: ConvLayers = field(default_factory=_default_convs)
    conv_bias: bool = False
    # per-utterance zero mean / unit variance of the waveform over its real samples, inside the model's
    # forward, so training, evaluation and transcription all see it (fairseq task.normalize,
    # transformers' do_normalize). The published BASE was trained without it, LARGE/XLS-R/MMS with it.
    normalize_waveform: bool = False
    # ---- transformer
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    layer_norm_first: bool = False  # False = post-LN (BASE), True = pre-LN (LARGE / XLS-R)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1  # after the feature projection
    dropout_features: float = 0.1  # on the quantizer's input (pretraining only)
    layerdrop: float = 0.05
    feature_grad_mult: float = 0.1  # scales the feature encoder's gradient; 0 freezes it
    # ---- quantizer and contrastive task (pretraining)
    final_dim: int = 256
    codevector_dim: int = 256  # fairseq latent_dim (0 there means final_dim)
    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    latent_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    logit_temp: float = 0.1
    num_negatives: int = 100
    diversity_loss_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    # ---- masking (time masks drive pretraining; fine-tuning sets its own values from the recipe)
    mask_time_prob: float = 0.65
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_channel_prob: float = 0.0
    mask_channel_length: int = 64
    require_same_masks: bool = True
    # ---- CTC head (fine-tuning)
    final_dropout: float = 0.0

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]  # type: ignore[misc]
        self.latent_temp = tuple(float(v) for v in self.latent_temp)  # type: ignore[assignment]
        problems = self.problems()
        if problems:
            raise LrasrError("invalid model config: " + "; ".join(problems))

    # ------------------------------------------------------------------------------ derived values
    @property
    def conv_dim(self) -> int:
        return self.conv_layers[-1][0]

    @property
    def frame_stride(self) -> int:
        """Samples per output frame (320 for the published shapes)."""
        stride = 1
        for _, _, s in self.conv_layers:
            stride *= s
        return stride

    def num_frames(self, num_samples: int) -> int:
        """Output frames of the feature encoder for ``num_samples`` input samples."""
        n = num_samples
        for _, k, s in self.conv_layers:
            n = max((n - k) // s + 1, 0)
        return n

    def problems(self) -> list[str]:
        out = []
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            out.append(f"extractor_mode must be group_norm or layer_norm, not {self.extractor_mode!r}")
        if not self.conv_layers or any(len(c) != 3 or min(c) < 1 for c in self.conv_layers):
            out.append("conv_layers must be a non-empty list of [channels, kernel, stride] positive ints")
        if self.embed_dim % self.num_heads:
            out.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.pos_conv_groups:
            out.append(f"embed_dim {self.embed_dim} is not divisible by pos_conv_groups {self.pos_conv_groups}")
        if self.codevector_dim % self.num_codevector_groups:
            out.append(f"codevector_dim {self.codevector_dim} is not divisible by "
                       f"num_codevector_groups {self.num_codevector_groups}")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "dropout_features",
                     "layerdrop", "mask_time_prob", "mask_channel_prob", "final_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                out.append(f"{name} must be in [0, 1), got {value}")
        if len(self.latent_temp) != 3 or self.latent_temp[1] <= 0 or not 0 < self.latent_temp[2] <= 1:
            out.append("latent_temp must be [start, floor > 0, decay in (0, 1]]")
        for name in ("num_layers", "ffn_dim", "final_dim", "num_codevectors_per_group", "num_negatives",
                     "mask_time_length", "mask_channel_length"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1")
        return out

    # ----------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_layers"] = [list(c) for c in self.conv_layers]
        data["latent_temp"] = list(self.latent_temp)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> "Wav2Vec2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LrasrError(f"{source}: unknown model field(s) {', '.join(unknown)}; "
                             f"known fields: {', '.join(sorted(known))}")
        data = dict(data)
        wrong = _type_problems(data)  # also turns YAML's 768.0 into 768 and 1 into 1.0 in ``data``
        if wrong:
            raise LrasrError(f"{source}: " + "; ".join(wrong))
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:  # e.g. conv_layers entries that are not numbers
            raise LrasrError(f"{source}: {exc}") from None

    @classmethod
    def preset(cls, name: str) -> "Wav2Vec2Config":
        if name not in PRESETS:
            raise LrasrError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict(PRESETS[name], source=f"preset {name}")

    @classmethod
    def from_recipe(cls, value: "str | dict[str, Any] | Wav2Vec2Config") -> "Wav2Vec2Config":
        """A preset name, or ``{preset: NAME, <field>: value, ...}`` (preset defaults to ``base``)."""
        if isinstance(value, Wav2Vec2Config):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        if not isinstance(value, dict):
            raise LrasrError(f"model must be a preset name or a mapping, not {type(value).__name__}")
        data = dict(value)
        name = data.pop("preset", "base")
        base = PRESETS.get(name)
        if base is None:
            raise LrasrError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**base, **data}, source="recipe model")


# Published shapes. BASE: fairseq wav2vec2_base_librispeech; LARGE: wav2vec2_large_librivox (also
# the XLS-R layout): layer-norm convs with bias, pre-LN transformer, Gumbel floor 0.1, final_dim 768,
# no feature penalty.
PRESETS: dict[str, dict[str, Any]] = {
    "base": {},  # the dataclass defaults
    "large": {
        "extractor_mode": "layer_norm",
        "conv_bias": True,
        "normalize_waveform": True,
        "embed_dim": 1024,
        "num_layers": 24,
        "num_heads": 16,
        "ffn_dim": 4096,
        "layer_norm_first": True,
        "dropout": 0.0,
        "layerdrop": 0.0,
        "final_dim": 768,
        "codevector_dim": 768,
        "latent_temp": [2.0, 0.1, 0.999995],
        "feature_penalty_weight": 0.0,
    },
    # Fast on a CPU (tests, the demo): the same 7-conv stride-320 shape with 64 channels, a 2-layer
    # d=128 transformer and small codebooks. A forward+backward on 4 x 4 s takes well under a second.
    "tiny": {
        "conv_layers": [list(c) for c in _default_convs(64)],
        "embed_dim": 128,
        "num_layers": 2,
        "num_heads": 2,
        "ffn_dim": 512,
        "pos_conv_kernel": 64,
        "pos_conv_groups": 16,
        "layerdrop": 0.0,
        "final_dim": 64,
        "codevector_dim": 64,
        "num_codevectors_per_group": 64,
        "num_negatives": 50,
        "mask_channel_length": 16,
    },
}
