"""Typed training configuration, read from YAML with command-line overrides.

``TrainConfig`` nests the assistant's own ``AssistantConfig`` (what model to build) with data,
optimisation, checkpoint and evaluation sections. Every leaf field becomes a ``--section.field`` flag
generated from the dataclasses, so YAML keys and flags cannot drift apart.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assistant.cli_args import add_dataclass_arguments
from assistant.config import AssistantConfig, build_dataclass
from assistant.errors import AssistantError


@dataclass
class DataConfig:
    train_file: str = field(default="", metadata={"help": "training rows: LLaVA .json/.jsonl or messages .jsonl"})
    val_file: str | None = field(default=None, metadata={"help": "validation rows (same formats)"})
    data_root: str | None = field(default=None, metadata={"help": "media paths are relative to this (default: train file's folder)"})
    max_bad_fraction: float = field(default=0.05, metadata={"help": "stop before training if more rows than this are bad"})
    modality_dropout: float = field(default=0.0, metadata={"help": "probability of dropping each media item"})
    max_length: int = field(default=1024, metadata={"help": "rows longer than this many tokens are bad rows"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    group_by_length: bool = field(default=True, metadata={"help": "batch rows of similar length together (less padding)"})
    feature_cache_mb: float = field(default=2048.0, metadata={"help": "memory for cached frozen-encoder outputs"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0 or not 0.0 <= self.modality_dropout <= 1.0:
            raise AssistantError("max_bad_fraction and modality_dropout must be in [0, 1]")


@dataclass
class OptimConfig:
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    connector_learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate of the connectors (default: learning_rate)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps before the cosine decay"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "rows per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto | no | bf16 | fp16 (auto: bf16 on capable GPUs, else no)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute LLM activations to save memory"})
    seed: int = field(default=0, metadata={"help": "seed for data order, dropout and initialisation"})

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise AssistantError("max_steps, batch_size and grad_accum must be at least 1")
        if self.connector_learning_rate is not None and self.connector_learning_rate <= 0:
            raise AssistantError(f"connector_learning_rate must be positive, got {self.connector_learning_rate}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise AssistantError(f"mixed_precision {self.mixed_precision!r} is not auto, no, bf16 or fp16")


@dataclass
class CheckpointConfig:
    save_every: int = field(default=50, metadata={"help": "steps between checkpoints (0 = only at the end)"})
    keep_last: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    save_dtype: str = field(default="float32", metadata={"help": "dtype of the final connector weights: float32 | bfloat16 | float16"})


@dataclass
class EvalConfig:
    eval_every: int = field(default=50, metadata={"help": "steps between evaluations (0 = only at the end)"})
    metric: str = field(default="exact_match", metadata={"help": "task metric on generated answers: exact_match | bleu | none"})
    max_samples: int = field(default=64, metadata={"help": "validation rows used per evaluation"})
    max_new_tokens: int = field(default=32, metadata={"help": "generation length for the task metric"})
    contract_rows: int = field(default=8, metadata={"help": "rows checked by the template contract before training"})


@dataclass
class AlignConfig:
    objective: str = field(default="lm", metadata={"help": "align loss: lm (next-token loss through the frozen LLM, as LLaVA) | lexical (see training.grounding)"})
    negatives: int = field(default=2048, metadata={"help": "lexical: vocabulary entries sampled as negatives per step"})
    logit_scale: float = field(default=1.0, metadata={"help": "lexical: multiplier on token-embedding dot products"})
    background: str = field(default="background", metadata={"help": "lexical, rows with regions: the word tokens outside every region learn"})
    background_cells: int = field(
        default=0, metadata={"help": "lexical, grid connectors: background cells scored per picture and step, drawn at random (0: all)"}
    )

    def __post_init__(self) -> None:
        if self.objective not in ("lm", "lexical"):
            raise AssistantError(f"align.objective {self.objective!r} is not lm or lexical")
        if self.negatives < 0 or self.logit_scale <= 0 or self.background_cells < 0:
            raise AssistantError("align.negatives and align.background_cells must be >= 0 and align.logit_scale > 0")
        if not self.background.strip():
            raise AssistantError("align.background must be a word")


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/adapter", metadata={"help": "checkpoints, logs, summary and the final adapter"})
    stage: str = field(default="instruct", metadata={"help": "align (connector only) | instruct (connector + LoRA)"})
    base: str | None = field(default=None, metadata={"help": "adapter folder to start from (e.g. the align stage's output)"})
    model: AssistantConfig = field(default_factory=AssistantConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})

    def __post_init__(self) -> None:
        if self.stage not in ("align", "instruct"):
            raise AssistantError(f"stage {self.stage!r} is not align or instruct")

    @property
    def adapter_dir(self) -> Path:
        return Path(self.output_dir) / "adapter"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Fine-tune an assistant's connector (and LoRA) on your data.")
    parser.add_argument("--config", help="YAML file with the run's settings")
    add_dataclass_arguments(parser, TrainConfig, recurse=True)
    return parser


def load_train_config(argv: list[str] | None = None, prog: str = "python -m training.finetune") -> TrainConfig:
    """YAML file (``--config``) first, then command-line overrides; validated on construction."""
    args = vars(build_parser(prog).parse_args(argv))
    data: dict[str, Any] = {}
    if args.get("config"):
        try:
            data = yaml.safe_load(Path(args.pop("config")).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise AssistantError(f"cannot read training config: {error}") from None
    args.pop("config", None)
    for dotted, value in args.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return build_dataclass(TrainConfig, data)
    except TypeError as error:
        raise AssistantError(f"invalid training config: {error}") from None
