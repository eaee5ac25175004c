"""Decode user-supplied audio into 16 kHz mono float samples with a content key, within limits.

Accepted sources: a file path, raw bytes or a ``data:audio/...;base64,`` URL of any container PyAV
reads (WAV, MP3, FLAC, OGG/Vorbis/Opus, M4A/AAC, and the soundtrack of a video file), or a
``(sample_rate, array)`` pair as Gradio's numpy audio gives (int16 or float, mono or
``(samples, channels)``). Every failure raises ``MediaError`` naming the input: no audio stream,
corrupt, truncated, disguised (not audio at all), silent, too short, too long, too many channels.
``cut_to_budget`` shortens the clips of one turn to the audio token budget, saying so in a log line.
This module knows nothing about encoders or tokens.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from assistant.config import MediaConfig
from assistant.errors import MediaError
from assistant.media import LoadedMedia, describe, read_media_bytes

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this every sample is digital silence
TRUNCATION_TOLERANCE_S = 0.25  # decoded audio may fall this short of the declared duration


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Decoded audio: 16 kHz mono float32 samples in [-1, 1], with a key that identifies the content."""

    samples: np.ndarray
    key: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def clip_from_samples(samples: np.ndarray, name: str, limits: MediaConfig) -> AudioClip:
    """Check decoded 16 kHz mono samples against the limits and key them by content."""
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    seconds = len(samples) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise MediaError(f"audio {name} is {seconds:.3f} s long, shorter than the {MIN_SECONDS} s minimum")
    if seconds > limits.audio_max_seconds:
        raise MediaError(f"audio {name} is {seconds:.1f} s long, over the {limits.audio_max_seconds:g} s limit")
    if not np.isfinite(samples).all():
        raise MediaError(f"audio {name} holds samples that are not finite numbers")
    peak = float(np.abs(samples).max())
    if peak < SILENCE_PEAK:
        raise MediaError(f"audio {name} is silent: every sample is below -80 dBFS, so there is nothing to listen to")
    samples = np.clip(samples, -1.0, 1.0)
    return AudioClip(samples, hashlib.sha256(b"audio16k" + samples.tobytes()).hexdigest())


def _from_array(source: tuple, name: str, limits: MediaConfig) -> AudioClip:
    """A ``(sample_rate, array)`` pair: int16/int32 or float samples, mono or (samples, channels)."""
    rate, array = source
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or not 1000 <= rate <= 384_000:
        raise MediaError(f"audio {name}: sample rate must be an integer between 1000 and 384000 Hz, got {rate!r}")
    array = np.asarray(array)
    if array.ndim == 2:
        if array.shape[1] > limits.audio_max_channels:
            raise MediaError(f"audio {name} has {array.shape[1]} channels, over the limit of {limits.audio_max_channels}")
    elif array.ndim != 1:
        raise MediaError(f"audio {name}: array must be (samples,) or (samples, channels), got shape {array.shape}")
    if array.shape[0] > limits.audio_max_seconds * rate:
        raise MediaError(f"audio {name} is {array.shape[0] / rate:.1f} s long, over the {limits.audio_max_seconds:g} s limit")
    if np.issubdtype(array.dtype, np.integer):
        samples = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif np.issubdtype(array.dtype, np.floating):
        samples = array.astype(np.float32)
    else:
        raise MediaError(f"audio {name}: samples must be integers or floats, got {array.dtype}")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, name)
    return clip_from_samples(samples, name, limits)


def resample(samples: np.ndarray, rate: int, name: str = "samples") -> np.ndarray:
    """``samples`` at ``rate`` -> 16 kHz, through FFmpeg's resampler (PyAV)."""
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    out = [piece.to_ndarray().reshape(-1) for piece in resampler.resample(frame)]
    out += [piece.to_ndarray().reshape(-1) for piece in resampler.resample(None)]
    if not out:
        raise MediaError(f"audio {name} could not be resampled from {rate} Hz")
    return np.concatenate(out)


def _decode(data: bytes, name: str, limits: MediaConfig) -> np.ndarray:
    """The first audio stream of a container, as 16 kHz mono float32 samples."""
    try:
        import av
    except ImportError:
        raise MediaError(f"audio {name}: decoding audio files needs PyAV (`pip install av`)") from None
    try:
        container = av.open(io.BytesIO(data))
    except Exception:  # PyAV raises its own error tree for data it cannot probe
        raise MediaError(f"{name} is not a readable audio file (unknown, corrupt or disguised format)") from None
    with container:
        if not container.streams.audio:
            raise MediaError(
                f"{name} has no audio stream: it is not an audio file or a video with sound (it reads as {container.format.name})"
            )
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 0
        if channels > limits.audio_max_channels:
            raise MediaError(f"audio {name} has {channels} channels, over the limit of {limits.audio_max_channels}")
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            declared = container.duration / 1_000_000
        if declared is not None and declared > limits.audio_max_seconds + 1:
            raise MediaError(f"audio {name} is {declared:.1f} s long, over the {limits.audio_max_seconds:g} s limit")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pieces, total, max_samples = [], 0, int((limits.audio_max_seconds + 1) * SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    total += pieces[-1].size
                if total > max_samples:
                    raise MediaError(f"audio {name} is longer than the {limits.audio_max_seconds:g} s limit")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except MediaError:
            raise
        except Exception as error:  # a decoder error part-way: the data is damaged
            raise MediaError(f"audio {name} is corrupt or truncated: {error}") from None
    if not pieces:
        raise MediaError(f"audio {name} has no decodable audio (empty or truncated stream)")
    samples = np.concatenate(pieces)
    declared = _wav_header_seconds(data) or declared  # FFmpeg takes a WAV's length from the file size, not its header
    if declared is not None and len(samples) / SAMPLE_RATE < declared - TRUNCATION_TOLERANCE_S:
        raise MediaError(
            f"audio {name} is corrupt or truncated: its header promises {declared:.2f} s but only "
            f"{len(samples) / SAMPLE_RATE:.2f} s could be decoded"
        )
    return samples


def _wav_header_seconds(data: bytes) -> float | None:
    """The duration a RIFF/WAVE header declares (data chunk size / byte rate), or None for other files."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, byte_rate = 12, None
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if chunk == b"fmt " and at + 16 <= len(data):
            byte_rate = int.from_bytes(data[at + 16 : at + 20], "little")
        if chunk == b"data":
            streaming = size in (0, 0xFFFFFFFF)  # a header written before the length was known
            return None if streaming or not byte_rate else size / byte_rate
        at += 8 + size + (size & 1)
    return None


def load_clip(source: Any, limits: MediaConfig) -> AudioClip:
    """Decode one audio source into a checked, keyed 16 kHz mono clip."""
    name = describe(source)
    if isinstance(source, AudioClip):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        return _from_array(source, name, limits)
    if isinstance(source, np.ndarray):
        raise MediaError(f"audio array {name}: pass (sample_rate, array) so the rate is known")
    data = read_media_bytes(source, limits)
    return clip_from_samples(_decode(data, name, limits), name, limits)


def load_audio(source: Any, limits: MediaConfig) -> LoadedMedia:
    return LoadedMedia("audio", (load_clip(source, limits),), (0.0,), describe(source))


@dataclass(frozen=True)
class AudioBudget:
    """The LLM tokens the audio of one turn may use, and how the connector counts them."""

    tokens: int
    tokens_of: Callable[[int], int]  # samples -> LLM tokens of one clip
    samples_within: Callable[[int], int]  # LLM tokens -> the most samples one clip may have


def cut_to_budget(items: list[LoadedMedia], budget: AudioBudget, where: str) -> list[LoadedMedia]:
    """The audio items of one turn, cut so that together they make at most ``budget.tokens`` LLM tokens.

    Clips are kept in order; the one that crosses the budget is cut, later ones are dropped. A cut clip
    gets a key of its own (its features differ from the whole clip's). Each cut is logged.
    """
    kept, left = [], budget.tokens
    for item in items:
        clip = item.frames[0]
        keep = len(clip.samples) if budget.tokens_of(len(clip.samples)) <= left else budget.samples_within(left)
        if keep < int(MIN_SECONDS * SAMPLE_RATE):
            logger.warning("%s: audio %s dropped: the turn's audio token budget of %d is used up", where, item.name, budget.tokens)
            left = 0
            continue
        if keep < len(clip.samples):
            logger.warning(
                "%s: audio %s cut from %.1f s to %.1f s to fit the turn's audio token budget of %d",
                where, item.name, clip.seconds, keep / SAMPLE_RATE, budget.tokens,
            )
            clip = AudioClip(clip.samples[:keep], f"{clip.key}:{keep}")
            item = LoadedMedia("audio", (clip,), item.timestamps, item.name)
        kept.append(item)
        left -= budget.tokens_of(len(clip.samples))
    return kept
