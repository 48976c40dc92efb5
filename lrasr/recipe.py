"""Recipe schema: validation, defaults (the one place for them) and path resolution.

A recipe is YAML loaded with ``yaml.safe_load`` and validated by pydantic models that forbid unknown
keys. Relative paths resolve against the folder holding the recipe file, whatever the current
directory. Errors name the file and the key's dotted path, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lrasr.errors import RecipeError
from lrasr.recipe_errors import format_validation_error

STAGES = ("prepare", "pretrain", "finetune", "lm", "evaluate")


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ----------------------------------------------------------------------------------------- corpora
# File extensions read as audio when a folder is searched (prepare's unlabeled corpora and folder-format
# labeled corpora, transcribe's folder inputs): libsndfile's formats and what ffmpeg decodes, phone
# recorders' AMR/3GP and Apple's CAF included.
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "oga", "opus", "mp3", "m4a", "mp4", "webm", "mka", "aac", "wma", "aiff",
                    "aif", "au", "amr", "3gp", "caf")


class UnlabeledCorpus(Section):
    path: Path
    card: str | None = None
    extensions: list[str] = Field(default_factory=lambda: list(AUDIO_EXTENSIONS))


PARQUET_AUDIO_COLUMN = "audio"  # the datasets library's Audio feature; a parquet corpus's audio_column unless set


class LabeledCorpus(Section):
    format: Literal["tsv", "csv", "kaldi", "commonvoice", "fairseq", "nemo", "folder", "parquet"]
    path: Path
    card: str | None = None
    # tsv/csv column names (None = not present)
    audio_column: str = "path"
    text_column: str = "text"
    speaker_column: str | None = "speaker"
    gender_column: str | None = None
    duration_column: str | None = None
    # commonvoice: which release table to read; fairseq: which manifest (train, valid, ...)
    split: str | None = None
    # fairseq labels: wrd or ltr
    labels: Literal["wrd", "ltr"] = "wrd"
    # when set, every item of this corpus goes to this split (corpus-defined splits)
    assign_split: Literal["train", "dev", "test"] | None = None
    # tsv/csv: utterance id column (absent: the audio path without extension)
    id_column: str = "id"
    # optional speaker table (TSV: speaker id first column, a `gender` column); relative to the corpus folder
    speakers: Path | None = None
    # parquet (Hugging Face datasets): files under a folder path; the audio column (default PARQUET_AUDIO_COLUMN)
    # holds {bytes, path} structs; a column or the file names (train-*/validation-*/test-*) may give splits
    pattern: str = "**/*.parquet"
    split_column: str | None = None
    file_splits: bool = True


class TextCorpus(Section):
    path: Path


class Corpora(Section):
    unlabeled: list[UnlabeledCorpus] = Field(default_factory=list)
    labeled: list[LabeledCorpus] = Field(default_factory=list)
    text: list[TextCorpus] = Field(default_factory=list)


# ----------------------------------------------------------------------------------------- prepare
class VadConfig(Section):
    """Voice activity detection; defaults follow the Indian-language toolkits (REFERENCE.md)."""

    backend: Literal["webrtc", "silero"] = "webrtc"
    aggressiveness: int = Field(2, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 30
    padding_ms: int = Field(300, ge=0)
    start_ratio: float = Field(0.9, gt=0, le=1)
    end_ratio: float = Field(0.9, gt=0, le=1)
    min_seconds: float = Field(1.0, ge=0)
    max_seconds: float = Field(15.0, gt=0)
    silero_threshold: float = Field(0.5, gt=0, lt=1)
    block_seconds: float = Field(60.0, gt=1)


class FilterConfig(Section):
    min_snr_db: float | None = 15.0
    max_clipping: float | None = Field(0.001, ge=0, le=1)
    dedupe: bool = True
    # duration limits for labeled utterances (unlabeled segments use vad.min/max_seconds)
    min_seconds: float = Field(0.1, ge=0)
    max_seconds: float = Field(20.0, gt=0)
    # a declared duration may differ from the decoded one by this much before the row is rejected
    duration_tolerance: float = Field(0.5, ge=0)


class SplitConfig(Section):
    dev: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    by: Literal["speaker", "utterance", "corpus"] = "speaker"
    # explicit lists: split name -> file with one utterance id per line
    lists: dict[Literal["train", "dev", "test"], Path] | None = None


class TokenizerConfig(Section):
    type: Literal["char", "sentencepiece"] = "char"
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = Field(256, ge=8)
    use_text_corpus: bool = False


class TextConfig(Section):
    """Text normalization; ``None`` fields take the language's default (lrasr.text.normalize)."""

    script: str | None = None
    remove_punctuation: bool = True
    lowercase: bool = True
    digits: Literal["keep", "drop", "reject"] = "reject"
    zwj: Literal["keep", "remove"] = "remove"
    extra_chars: str = ""


class PrepareConfig(Section):
    vad: VadConfig = Field(default_factory=VadConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    labeled_audio: Literal["reference", "flac"] = "reference"
    jobs: int = Field(1, ge=1)


# ---------------------------------------------------------------------------------------- training
class TrainCommon(Section):
    """Settings shared by pretraining and fine-tuning (one training loop)."""

    max_steps: int = Field(1000, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    clip_norm: float = Field(10.0, gt=0)
    # effective batch in seconds of audio, summed over processes; accumulation is derived from it
    batch_seconds: float = Field(40.0, gt=0)
    # largest micro-batch one device holds, in seconds of audio
    max_device_batch_seconds: float = Field(40.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)
    max_nonfinite_in_row: int = Field(20, ge=1)
    num_workers: int = Field(0, ge=0)


class PretrainConfig(TrainCommon):
    # a preset name (tiny, base, large) or a mapping {preset: NAME, <field>: value, ...}
    model: str | dict[str, Any] = "tiny"
    init_from: Path | None = None
    include_labeled: bool = False
    warmup_steps: int | None = None  # default: 8% of max_steps, as 32k/400k in the paper
    crop_min_seconds: float = Field(2.0, gt=0)
    crop_max_seconds: float = Field(15.6, gt=0)
    feature_grad_mult: float = Field(0.1, ge=0)
    # Fraction of the run's updates by which the Gumbel temperature must reach its floor: the model's
    # decay per update is made faster when needed, never slower (see stages.pretrain.gumbel_decay).
    # The paper's 0.999995 reaches 0.5 from 2.0 after 277k updates (0.69 of base's 400k) and 0.1 after
    # 599k (0.60 of large's 1M), so 0.7 leaves those runs exactly as published, while a run of a few
    # hundred updates no longer keeps the temperature near 2.0 throughout. null: the model's decay as is.
    temperature_floor_at: float | None = Field(0.7, gt=0, le=1)


class FinetuneConfig(TrainCommon):
    model: str | dict[str, Any] = "tiny"
    # "pretrain" (the recipe's own pretrain output), a transformers folder, a fairseq .pt, or none
    init_from: str | None = None
    # a checkpoint whose CTC head does not fit the tokenizer is an error unless this trains a new head
    reinit_head: bool = False
    # re-initialize the top N transformer layers of the checkpoint before fine-tuning (Pasad et al.
    # 2021: wav2vec 2.0's last layers specialize in the pretext task). A tiny model after a short
    # pretraining run fine-tuned far better with its top layer reset (benchmarks/RESULTS.md, issue 5)
    reinit_layers: int = Field(0, ge=0)
    # default (see peak_lr): 5e-5, the paper's value for base/large with their large batches; 5e-4 for
    # narrow models (tiny), which would hardly move at 5e-5 in a short CPU run
    lr: float | None = Field(None, gt=0)
    adam_eps: float = 1e-8
    weight_decay: float = Field(0.0, ge=0)
    tri_stage: tuple[float, float, float] = (0.1, 0.4, 0.5)
    final_lr_scale: float = 0.05
    freeze_steps: int | None = None  # default: 10% of max_steps (10k of 20k+ in the paper)
    # default: frozen when initialized from a checkpoint (the paper), trained from scratch. A short
    # pretraining run leaves a weak convolutional encoder that fine-tuning may need to adapt.
    freeze_feature_encoder: bool | None = None
    mask_time_prob: float = Field(0.5, ge=0, lt=1)
    mask_time_length: int = Field(10, ge=1)
    mask_channel_prob: float = Field(0.25, ge=0, lt=1)
    mask_channel_length: int | None = None  # default: 64, or d/12 for narrow models
    layerdrop: float = Field(0.05, ge=0, lt=1)
    eval_every: int = Field(100, ge=1)
    metric: Literal["wer", "cer"] = "wer"
    early_stopping: int | None = Field(None, ge=1)  # evaluations without improvement

    def peak_lr(self, embed_dim: int) -> float:
        """``lr`` when set, else the default for a model of width ``embed_dim``."""
        if self.lr is not None:
            return self.lr
        return 5e-4 if embed_dim <= 256 else 5e-5


# -------------------------------------------------------------------------------------- lm, decode
# KenLM's -S size: a number with one of % b k K M G T P E Z Y (none means kilobytes)
KENLM_MEMORY = r"\d+(\.\d+)?[%bkKMGTPEZY]?"


class LmConfig(Section):
    order: int = Field(3, ge=2, le=6)  # KenLM cannot load unigram-only models
    prune: list[int] | None = None
    memory: str = Field("10%", pattern=f"^{KENLM_MEMORY}$")
    include_train_text: bool = True


class DecodeConfig(Section):
    decoder: Literal["greedy", "beam"] = "beam"
    beam_width: int = Field(50, ge=1)
    alpha: float = 0.5
    beta: float = 1.0
    hotwords: list[str] = Field(default_factory=list)
    hotword_weight: float = 10.0
    chunk_seconds: float = Field(20.0, gt=0)
    batch_seconds: float = Field(120.0, gt=0)
    tune_alpha: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    tune_beta: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])


class EvaluateConfig(Section):
    split: Literal["dev", "test"] = "test"


# ------------------------------------------------------------------------------------------ recipe
class Recipe(Section):
    name: str
    language: str
    seed: int = 1234
    workdir: Path
    corpora: Corpora = Field(default_factory=Corpora)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig | None = None
    lm: LmConfig | None = None
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    # where the recipe came from (set by load_recipe, not part of the YAML)
    source: Path | None = Field(None, exclude=True)

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a language code such as 'ml' or 'hi'")
        return value.lower()

    def stage_dir(self, stage: str) -> Path:
        return self.workdir / stage

    def stages(self) -> list[str]:
        """The stages this recipe runs, in order (pretrain, finetune and lm are optional; evaluate
        needs finetune's model, so a recipe without a finetune section stops before it)."""
        wanted = {"prepare": True, "pretrain": self.pretrain, "finetune": self.finetune, "lm": self.lm,
                  "evaluate": self.finetune}
        return [s for s in STAGES if wanted[s]]


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make every recipe path absolute against ``base`` (the recipe's folder), in place."""

    def resolve(value: Any) -> Any:
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    if "workdir" in data:
        data["workdir"] = resolve(data["workdir"])
    corpora = data.get("corpora") or {}
    if isinstance(corpora, dict):
        for kind in ("unlabeled", "labeled", "text"):
            for entry in corpora.get(kind) or []:
                if isinstance(entry, dict) and "path" in entry:
                    entry["path"] = resolve(entry["path"])
    split = ((data.get("prepare") or {}).get("split") or {}) if isinstance(data.get("prepare"), dict) else {}
    if isinstance(split, dict) and isinstance(split.get("lists"), dict):
        split["lists"] = {k: resolve(v) for k, v in split["lists"].items()}
    for stage in ("pretrain", "finetune"):
        section = data.get(stage)
        if isinstance(section, dict) and section.get("init_from") not in (None, "pretrain", "none"):
            section["init_from"] = resolve(section["init_from"])


def missing_paths(recipe: Recipe) -> list[str]:
    """Dotted keys of corpus paths that do not exist, with the path, for error messages."""
    problems = []
    for kind in ("unlabeled", "labeled", "text"):
        for i, entry in enumerate(getattr(recipe.corpora, kind)):
            if not entry.path.exists():
                problems.append(f"corpora.{kind}[{i}].path: {entry.path} does not exist")
    for stage in ("pretrain", "finetune"):  # a checkpoint to start from: missing, it fails only when the stage starts
        value = getattr(getattr(recipe, stage), "init_from", None)
        if value is not None and str(value) not in ("pretrain", "none") and not Path(str(value)).exists():
            problems.append(f"{stage}.init_from: {value} does not exist")
    return problems


def load_recipe(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    check_paths: bool = True,
) -> Recipe:
    """Load, resolve and validate a recipe file.

    ``overrides`` maps dotted keys to values (e.g. ``{"workdir": "/tmp/x", "pretrain.max_steps": 5}``),
    applied before validation; CLI options use it. Raises ``RecipeError`` with one line per problem.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError("recipe file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RecipeError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, line) from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a mapping of keys (name, language, workdir, ...)", path)
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    base = path.resolve().parent
    _resolve_paths(data, base)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, path, Recipe)) from None
    recipe.source = path.resolve()
    from lrasr.corpora import card_problems  # corpus cards: unknown card, wrong format or folder layout

    problems = (missing_paths(recipe) if check_paths else []) + card_problems(recipe, check_layout=check_paths)
    if problems:
        raise RecipeError("\n".join(f"{path}: {p}" for p in problems))
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (for run.json and fingerprints)."""
    return recipe.model_dump(mode="json", exclude={"source"})
