"""Turn user-supplied media references into decoded, size-checked frames with a content key.

Accepted image sources: a file path, raw bytes, a ``data:image/...;base64,`` URL, a PIL image or a
``(H, W, 3)`` uint8 array. Videos: a file path (animated GIF/WebP through Pillow, other containers
through PyAV) or a list of image sources. Every failure raises ``MediaError`` (an ``AssistantError``) naming the input.
This module knows nothing about encoders or tokens; callers say how many frames a video gets.
"""

from __future__ import annotations

import base64
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from assistant.config import MediaConfig
from assistant.errors import MediaError


@dataclass(frozen=True)
class Frame:
    """One decoded picture handed to an image encoder, with a key that identifies its content."""

    image: Image.Image
    key: str


@dataclass(frozen=True)
class LoadedMedia:
    """A media item ready for encoding: one frame for an image, several for a video."""

    modality: str  # "image", "video" or "audio"
    frames: tuple[Any, ...]  # ``Frame``s for an image or video, one ``assistant.audio.AudioClip`` for audio
    timestamps: tuple[float, ...]  # seconds, one per frame
    name: str  # how error messages and logs refer to it


def describe(source: Any) -> str:
    """A short human-readable name for a media source, for error messages."""
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("data:"):
            return text[:30] + "..."
        return text if len(text) <= 80 else "..." + text[-77:]  # keep the end: the file name
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def read_media_bytes(source: Any, limits: MediaConfig) -> bytes:
    max_bytes = int(limits.max_file_mb * 1024 * 1024)
    name = describe(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, str) and source.startswith("data:"):
        header, _, payload = source.partition(",")
        if ";base64" not in header:
            raise MediaError(f"data URL {name}: only base64 data URLs are supported")
        if len(payload) * 3 // 4 > max_bytes:
            raise MediaError(f"data URL is larger than the {limits.max_file_mb:g} MB limit")
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError:
            raise MediaError("data URL holds invalid base64") from None
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        raise MediaError(f"{name}: remote URLs are not fetched; download the file and pass its path")
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            raise MediaError(f"media file not found: {name}") from None
        if not path.is_file():
            raise MediaError(f"media path is not a file: {name}")
        if size > max_bytes:
            raise MediaError(f"media file {name} is {size / 2**20:.1f} MB, over the {limits.max_file_mb:g} MB limit")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise MediaError(f"cannot read media file {name}: {error.strerror}") from None
    else:
        raise MediaError(f"unsupported media source {name}")
    if len(data) > max_bytes:
        raise MediaError(f"media {name} is {len(data) / 2**20:.1f} MB, over the {limits.max_file_mb:g} MB limit")
    if not data:
        raise MediaError(f"media {name} is empty")
    return data


def _check_pixels(image: Image.Image, name: str, limits: MediaConfig) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise MediaError(f"image {name} has no pixels")
    if width * height > limits.max_image_pixels:
        raise MediaError(
            f"image {name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_image_pixels} (possible decompression bomb)"
        )


def _open_image(data: bytes, name: str, limits: MediaConfig) -> Image.Image:
    """Open and fully decode an image from bytes, checking its pixel count before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image, name, limits)
            image.load()
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"image {name} exceeds Pillow's decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise MediaError(f"{name} is not a readable image (unknown or disguised format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"image {name} is corrupt or truncated: {error}") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        background = Image.new("RGB", image.size, "white")
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _frame_from_pil(image: Image.Image, name: str, limits: MediaConfig) -> Frame:
    _check_pixels(image, name, limits)
    rgb = _to_rgb(image)
    digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
    return Frame(rgb, digest)


def load_frame(source: Any, limits: MediaConfig) -> Frame:
    """Decode one image source into an RGB frame keyed by a hash of its content."""
    name = describe(source)
    if isinstance(source, Image.Image):
        return _frame_from_pil(source, name, limits)
    if type(source).__module__ == "numpy" and hasattr(source, "shape"):
        if len(source.shape) not in (2, 3) or str(source.dtype) != "uint8":
            raise MediaError(f"image array must be (H, W) or (H, W, 3) uint8, got {source.shape} {source.dtype}")
        return _frame_from_pil(Image.fromarray(source), name, limits)
    data = read_media_bytes(source, limits)
    image = _open_image(data, name, limits)
    return Frame(_to_rgb(image), hashlib.sha256(data).hexdigest())


def load_image(source: Any, limits: MediaConfig) -> LoadedMedia:
    return LoadedMedia("image", (load_frame(source, limits),), (0.0,), describe(source))


def sample_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames (centre of each segment)."""
    if total <= count:
        return list(range(total))
    return [int((i + 0.5) * total / count) for i in range(count)]


def load_video(source: Any, limits: MediaConfig, num_frames: int, fps: float | None = None) -> LoadedMedia:
    """Sample ``num_frames`` frames evenly from a video file or a list of frames.

    Args:
        source: Path to a video / animated image, or a sequence of image sources.
        limits: Size limits.
        num_frames: How many frames to keep.
        fps: Frame rate of a list of frames (timestamps); default 1 frame per second.
    """
    name = describe(source)
    if isinstance(source, (list, tuple)):
        if not source:
            raise MediaError("video frame list is empty")
        indices = sample_indices(len(source), num_frames)
        frames = tuple(load_frame(source[i], limits) for i in indices)
        rate = fps or 1.0
        return LoadedMedia("video", frames, tuple(i / rate for i in indices), f"<video of {len(source)} frames>")
    data = read_media_bytes(source, limits)
    decoded = _decode_animated_image(data, name, limits, num_frames)
    if decoded is None:
        decoded = _decode_container(data, name, limits, num_frames)
    frames, timestamps = decoded
    if not frames:
        raise MediaError(f"video {name} has no decodable frames")
    return LoadedMedia("video", tuple(frames), tuple(timestamps), name)


def _decode_animated_image(
    data: bytes, name: str, limits: MediaConfig, num_frames: int
) -> tuple[list[Frame], list[float]] | None:
    """Frames of an animated GIF/WebP/PNG via Pillow, or None if Pillow cannot open the data."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        return None
    _check_pixels(image, name, limits)
    total = getattr(image, "n_frames", 1)
    frames, timestamps, clock = [], [], 0.0
    wanted = set(sample_indices(total, num_frames))
    try:
        for index in range(total):
            image.seek(index)
            if index in wanted:
                image.load()
                frames.append(_frame_from_pil(image.copy(), name, limits))
                timestamps.append(clock)
            clock += image.info.get("duration", 100) / 1000.0
    except (OSError, EOFError, ValueError) as error:
        raise MediaError(f"video {name} is corrupt or truncated: {error}") from None
    return frames, timestamps


def _decode_container(
    data: bytes, name: str, limits: MediaConfig, num_frames: int
) -> tuple[list[Frame], list[float]]:
    """Frames of an MP4/WebM/... file via PyAV (imported only when a video file arrives)."""
    try:
        import av
    except ImportError:
        raise MediaError(f"video {name}: decoding video files needs PyAV (`pip install av`)") from None
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise MediaError(f"{name} has no video stream")
            stream = container.streams.video[0]
            total = stream.frames or 0
            if total <= 0 and stream.duration and stream.average_rate:
                total = int(stream.duration * stream.time_base * stream.average_rate)
            decoded = []
            wanted = set(sample_indices(total, num_frames)) if total > 0 else None
            for index, frame in enumerate(container.decode(stream)):
                if wanted is None or index in wanted:
                    decoded.append((frame.to_image(), float(frame.time or 0.0)))
                if wanted is not None and index >= max(wanted):
                    break
    except MediaError:
        raise
    except Exception as error:  # PyAV raises its own error tree for corrupt containers
        raise MediaError(f"{name} is not a readable video: {error}") from None
    if wanted is None:  # frame count unknown: decoded everything, sample now
        decoded = [decoded[i] for i in sample_indices(len(decoded), num_frames)]
    return [_frame_from_pil(image, name, limits) for image, _ in decoded], [time for _, time in decoded]
