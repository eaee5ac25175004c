"""``transcribe_audio``: what is said in an audio clip of the conversation, through faster-whisper.

The model is the packaged Whisper base (CTranslate2, the same files as the default audio encoder;
when the assistant's audio encoder is that model, its loaded copy is reused), or the faster-whisper
model named by ``$MMA_WHISPER_MODEL`` (a CTranslate2 folder, or a size such as ``small`` that is
already in the local cache). Options: the spoken language (detected when not given) and segment
timestamps. The clip is the whole recording, not the part the LLM's audio token budget kept.

    python -m plugins.transcription talk.mp3 [--language en] [--timestamps]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Sequence

from langchain_core.tools import InjectedToolArg, ToolException

from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.tools.context import ToolContext
from plugins.base import plugin

logger = logging.getLogger(__name__)

WHISPER_MODEL_VARIABLE = "MMA_WHISPER_MODEL"


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    segments: tuple[Segment, ...]

    def render(self, timestamps: bool) -> str:
        head = f"Language: {self.language} ({self.language_probability:.0%})"
        if not timestamps:
            return f"{head}\n{self.text}" if self.text else f"{head}\n(no speech found)"
        lines = [f"[{segment.start:6.2f} - {segment.end:6.2f}] {segment.text}" for segment in self.segments]
        return "\n".join([head, *lines]) if lines else f"{head}\n(no speech found)"


@functools.lru_cache(maxsize=2)
def _load(model: str) -> Any:
    from faster_whisper import WhisperModel

    try:
        return WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1, local_files_only=True)
    except Exception as error:  # faster-whisper / huggingface_hub raise several kinds for a missing model
        raise AssistantError(f"cannot load the Whisper model {model!r}: {error}") from None


def whisper_model(assistant: Any = None) -> Any:
    """The faster-whisper model to transcribe with (see the module docstring)."""
    named = os.environ.get(WHISPER_MODEL_VARIABLE)
    if named:
        return _load(named)
    encoders = getattr(getattr(assistant, "model", None), "encoders", None)
    encoder = encoders["audio"] if encoders is not None and "audio" in encoders else None
    if getattr(encoder, "whisper", None) is not None:
        return encoder.whisper
    from assistant.encoders.whisper import packaged_whisper_folder

    return _load(str(packaged_whisper_folder()))


def transcribe(samples: Any, model: Any, language: str | None = None, beam_size: int = 5) -> Transcript:
    """Transcribe 16 kHz mono samples; ``language`` None detects it.

    Raises:
        AssistantError: The language code is not one Whisper knows.
    """
    if language is not None and model.model.is_multilingual and language not in _languages():
        raise AssistantError(f"unknown language {language!r}; use a code such as 'en', 'fr' or 'de'")
    pieces, info = model.transcribe(samples, language=language, beam_size=beam_size, vad_filter=False)
    segments = tuple(Segment(round(piece.start, 2), round(piece.end, 2), piece.text.strip()) for piece in pieces)
    text = " ".join(segment.text for segment in segments if segment.text)
    return Transcript(text, info.language, float(info.language_probability), segments)


@functools.lru_cache(maxsize=1)
def _languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


@plugin(timeout_s=300.0)
def transcribe_audio(
    language: str = "",
    timestamps: bool = False,
    audio: int = -1,
    context: Annotated[ToolContext, InjectedToolArg] = None,
) -> str:
    """Write down the words spoken in an audio clip of the conversation.

    Args:
        language: The spoken language as a code such as "en" or "fr"; empty to detect it.
        timestamps: Start each segment with its start and end time in seconds.
        audio: Which clip of the conversation: -1 is the latest, 0 the first.
    """
    if context is None:
        raise ToolException("transcribe_audio needs the conversation; run it through the assistant's tool runner")
    clip = context.clip(audio)
    try:
        return transcribe(clip.samples, whisper_model(context.assistant), language.strip().lower() or None).render(timestamps)
    except AssistantError as error:
        raise ToolException(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m plugins.transcription", description="Transcribe an audio or video file.")
    parser.add_argument("file")
    parser.add_argument("--language", default=None, help="spoken language code (default: detect)")
    parser.add_argument("--timestamps", action="store_true", help="one line per segment with its times")
    args = parser.parse_args(argv)
    from assistant.audio import load_clip

    try:
        clip = load_clip(args.file, MediaConfig(max_file_mb=500, audio_max_seconds=4 * 3600))
        print(transcribe(clip.samples, whisper_model(), args.language).render(args.timestamps))
    except AssistantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
