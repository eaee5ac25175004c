"""Typed configuration: one small dataclass per component, nested into ``AssistantConfig``.

Each dataclass validates itself in ``__post_init__`` and round-trips through JSON. The config only
names things (models, connector kinds, limits); building them is the job of the modules that own
them. It knows nothing about torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError

DEFAULT_LLM = "default"
DEFAULT_VISION_ENCODER = "efficientnet_lite0"
DEFAULT_AUDIO_ENCODER = "whisper"


@dataclass
class EncoderConfig:
    """A frozen media encoder."""

    kind: str = field(
        default=DEFAULT_VISION_ENCODER,
        metadata={"help": "encoder registry key: efficientnet_lite0 | hf_vision (images); whisper | hf_whisper (audio)"},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "Hugging Face id or local folder (hf_vision, hf_whisper); a CTranslate2 Whisper folder "
                          "(whisper; default: the packaged Whisper base)"},
    )
    feature_layer: int | None = field(
        default=None,
        metadata={"help": "which layer's tokens: hf_vision hidden-state index (default -2, as LLaVA); "
                          "efficientnet_lite0 block 0-15 or -1 for the 1280-wide head (default 5)"},
    )
    drop_cls_token: bool = field(default=True, metadata={"help": "drop the CLS token where the model has one"})
    image_size: int = field(default=224, metadata={"help": "input resolution (efficientnet_lite0)"})
    pad_to_window: bool = field(
        default=False,
        metadata={"help": "whisper: encode every 30-s window padded to its full length, as Whisper was trained, and keep "
                          "the frames of real audio (about 20x slower for a 2-s clip); off: encode only the real audio. "
                          "hf_whisper always pads (its encoder takes 30-s windows only)"},
    )

    def __post_init__(self) -> None:
        if self.kind in ("hf_vision", "hf_whisper") and not self.model:
            raise AssistantError(f"encoder kind {self.kind!r} needs `model` (a Hugging Face id or folder)")
        if self.image_size < 32:
            raise AssistantError(f"encoder image_size must be at least 32, got {self.image_size}")


@dataclass
class ConnectorConfig:
    """A trainable connector; options a connector kind does not take are ignored."""

    kind: str = field(default="mlp", metadata={"help": "connector registry key: mlp | resampler (images); stack (audio)"})
    hidden_dim: int | None = field(default=None, metadata={"help": "inner width (default: LLM width)"})
    num_latents: int = field(default=32, metadata={"help": "output tokens per item (resampler)"})
    depth: int = field(default=2, metadata={"help": "cross-attention blocks (resampler)"})
    num_heads: int = field(default=8, metadata={"help": "attention heads (resampler)"})
    position_embedding: str = field(default="none", metadata={"help": "none | learned | sincos2d"})
    match_embedding_scale: bool = field(
        default=True, metadata={"help": "end with an RMS norm whose gain starts at the LLM's token-embedding RMS"}
    )
    tokens_per_cell: int = field(default=1, metadata={"help": "LLM tokens per encoder cell (mlp)"})
    select_cells: int = field(
        default=0, metadata={"help": "pass on only this many cells, those scored most likely to hold an object (mlp; 0: all)"}
    )
    stack: int = field(default=8, metadata={"help": "encoder frames stacked into one LLM token (stack; Whisper: 50 frames/s)"})

    def __post_init__(self) -> None:
        if self.num_latents < 1 or self.depth < 1 or self.num_heads < 1 or self.stack < 1:
            raise AssistantError("connector num_latents, depth, num_heads and stack must be positive")
        if self.tokens_per_cell < 1 or self.select_cells < 0:
            raise AssistantError(
                f"connector tokens_per_cell must be positive and select_cells not negative, got "
                f"{self.tokens_per_cell} and {self.select_cells}"
            )

    def options(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "kind"}


@dataclass
class ModalityConfig:
    """How one modality reaches the LLM: a frozen encoder, then a connector."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)

    @classmethod
    def default_audio(cls) -> "ModalityConfig":
        """The packaged Whisper-base encoder and a frame-stacking connector (8 frames, 6.25 tokens per second)."""
        return cls(EncoderConfig(kind=DEFAULT_AUDIO_ENCODER), ConnectorConfig(kind="stack", stack=8))


SERVING_MODES = ("eager", "merged", "bf16", "int8", "llama_cpp", "auto")  # assistant.llm_serving
GGUF_TYPES = ("f16", "q8_0", "q5_1", "q4_1", "source")  # assistant.llm_serving.llama_cpp_weights

@dataclass
class LoraConfig:
    """LoRA on the LLM through peft; ``r == 0`` means no LoRA."""

    r: int = field(default=0, metadata={"help": "LoRA rank; 0 disables LoRA"})
    alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA path"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "module names LoRA wraps"},
    )

    def __post_init__(self) -> None:
        if self.r < 0:
            raise AssistantError(f"lora r must be >= 0, got {self.r}")
        if self.r and not self.target_modules:
            raise AssistantError("lora target_modules is empty")


@dataclass
class LLMConfig:
    """The language model."""

    model: str = field(default=DEFAULT_LLM, metadata={"help": "'default', a Hugging Face id, a folder, or a .gguf file"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    quantize: str | None = field(default=None, metadata={"help": "None | 4bit | 8bit (bitsandbytes)"})
    lora: LoraConfig = field(default_factory=LoraConfig)
    max_context_tokens: int | None = field(default=None, metadata={"help": "context window (default: the model's)"})
    serving: str = field(
        default="eager", metadata={"help": "eager | merged | bf16 | int8 | llama_cpp | auto: the weights and kernels chat decodes with (assistant.llm_serving)"}
    )

    def __post_init__(self) -> None:
        if self.serving not in SERVING_MODES:
            raise AssistantError(f"llm serving {self.serving!r} is not one of {', '.join(SERVING_MODES)}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise AssistantError(f"llm dtype {self.dtype!r} is not float32, bfloat16 or float16")
        if self.quantize not in (None, "4bit", "8bit"):
            raise AssistantError(f"llm quantize {self.quantize!r} is not None, '4bit' or '8bit'")


@dataclass
class MediaConfig:
    """Limits on media a request may carry, and the encoder-output cache."""

    max_items_per_request: int = field(default=8, metadata={"help": "media items allowed in one conversation"})
    max_file_mb: float = field(default=20.0, metadata={"help": "largest media file accepted"})
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "decompression-bomb limit (Pillow's default)"})
    video_max_frames: int = field(default=8, metadata={"help": "frames sampled from a video"})
    video_token_budget: int = field(default=512, metadata={"help": "LLM tokens one video may use"})
    cache_mb: float = field(default=256.0, metadata={"help": "bound on cached encoder outputs"})
    audio_max_seconds: float = field(default=600.0, metadata={"help": "longest audio clip accepted (decoded duration)"})
    audio_max_channels: int = field(default=8, metadata={"help": "most channels an audio file may have (mixed to mono)"})
    audio_token_budget: int = field(
        default=750, metadata={"help": "LLM tokens the audio of one turn may use; longer audio is cut (and logged)"}
    )

    def __post_init__(self) -> None:
        if self.max_items_per_request < 0 or self.max_file_mb <= 0 or self.max_image_pixels <= 0:
            raise AssistantError("media limits must be positive")
        if self.video_max_frames < 1 or self.video_token_budget < 1:
            raise AssistantError("video_max_frames and video_token_budget must be at least 1")
        if self.audio_max_seconds <= 0 or self.audio_max_channels < 1 or self.audio_token_budget < 1:
            raise AssistantError("audio_max_seconds, audio_max_channels and audio_token_budget must be positive")


@dataclass
class ToolCallingConfig:
    """How the model is told about tools and how its calls are decoded."""

    format: str = field(default="hermes", metadata={"help": "tool-call format the model writes (assistant.tools.formats)"})
    constrained: bool = field(
        default=True, metadata={"help": "decode calls under a grammar built from the tools' JSON schemas (xgrammar)"}
    )
    max_string_chars: int = field(
        default=1000,
        metadata={"help": "longest string argument the grammar allows where a tool's schema sets no maxLength"},
    )
    max_array_items: int = field(
        default=100, metadata={"help": "most items of an array argument the grammar allows where a schema sets no maxItems"}
    )

    def __post_init__(self) -> None:
        for name in ("max_string_chars", "max_array_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AssistantError(f"tools.{name} must be a positive integer, got {value!r}")


@dataclass
class EngineConfig:
    """The decode engine: how many requests decode together and how much KV cache is kept."""

    max_batch: int = field(default=16, metadata={"help": "requests decoded together; more wait their turn"})
    kv_pool_mb: float = field(
        default=512.0, metadata={"help": "bound on cached conversation prefixes (least recently used evicted)"}
    )
    prefill_chunk: int = field(default=512, metadata={"help": "prompt positions prefilled per step"})
    threads: int = field(
        default=0,
        metadata={"help": "torch intra-op threads of the decode thread; 0 = one per two CPU cores (see assistant.batching)"},
    )

    gguf_type: str = field(
        default="f16", metadata={"help": "serving 'llama_cpp': the type the LoRA-merged weights are written in (f16 | q8_0 | "
                                         "q5_1 | q4_1), or 'source' (a GGUF LLM's own file, its LoRA as an adapter; else q8_0)"}
    )

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.prefill_chunk < 1 or self.kv_pool_mb < 0 or self.threads < 0:
            raise AssistantError("engine max_batch and prefill_chunk must be at least 1, kv_pool_mb and threads not negative")
        if self.gguf_type not in GGUF_TYPES:
            raise AssistantError(f"engine gguf_type {self.gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")

    @property
    def decode_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 2) // 2)


@dataclass
class AssistantConfig:
    """Everything needed to rebuild an assistant: which encoders, connectors and LLM, and limits.

    ``modalities`` maps a modality name ("image", later "audio") to its encoder and connector.
    Video has no entry of its own: its frames go through the "image" encoder and connector.
    """

    llm: LLMConfig = field(default_factory=LLMConfig)
    modalities: dict[str, ModalityConfig] = field(default_factory=lambda: {"image": ModalityConfig()})
    media: MediaConfig = field(default_factory=MediaConfig)
    tools: ToolCallingConfig = field(default_factory=ToolCallingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    system_prompt: str | None = field(default=None, metadata={"help": "used when a conversation has none"})
    prefix_reuse: bool = field(default=True, metadata={"help": "reuse the KV cache of a shared conversation prefix"})
    allow_download: bool = field(default=False, metadata={"help": "let Hugging Face ids download from the hub"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with a checkpoint"})

    def __post_init__(self) -> None:
        unknown = set(self.modalities) - {"image", "audio"}
        if unknown:
            raise AssistantError(f"unknown modalities {sorted(unknown)}; supported: image, audio")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AssistantConfig":
        try:
            return build_dataclass(cls, data)
        except (TypeError, KeyError) as error:
            raise AssistantError(f"invalid assistant config: {error}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "AssistantConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise AssistantError(f"cannot read assistant config {path}: {error}") from None
        return cls.from_dict(data)


def build_dataclass(cls: type, data: dict[str, Any]) -> Any:
    """Build a (nested) dataclass from plain JSON/YAML data, recursing by type hints.

    Raises:
        TypeError: Naming an unknown field or a value of the wrong shape.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = build_dataclass(hint, value)
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            if not isinstance(value, dict):
                raise TypeError(f"{cls.__name__}.{key} expects a mapping")
            value = {name: build_dataclass(typing.get_args(hint)[1], item) for name, item in value.items()}
        kwargs[key] = value
    return cls(**kwargs)
