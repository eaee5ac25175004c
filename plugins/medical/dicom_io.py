"""Turn DICOM files, a DICOM series or plain PNG/JPEG pictures into de-identified 8-bit frames.

The order is the point: sizes are checked before anything is read; each header is parsed (pydicom,
``force=False``) and checked for what can be said without patient data (cut short, no pixel data,
no decoder for its transfer syntax, too many pixels); then it is de-identified
(``plugins.medical.deid``); only then are descriptions read and the sampled frames decoded, passed
through the Modality LUT (rescale) and the VOI LUT or window (or a min-max stretch) to 8 bits.

Error messages name a file by its place and extension ("file 2 of 5 (.dcm)"), never by its name,
since file names often carry the patient's, and they never quote a header value.

A plain picture has no header: nothing is de-identified or masked in it (``Study.deid`` is None) and
the sender vouches for what it shows. This module knows nothing about the model or the report.
"""

from __future__ import annotations

import io
import logging
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from assistant.config import MediaConfig
from assistant.errors import AssistantError, MediaError
from plugins.medical.deid import DeidReport, deidentify, quiet_pydicom
from plugins.medical.pixels import frames_of, pixel_view

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_PNG_MAGIC, _JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass
class Study:
    """One study ready for the vision encoder, with what a report may say about it (all de-identified)."""

    frames: list[Image.Image]  # 8-bit "L" (or "RGB" for colour), at most max_frames
    modality: str  # "CT", "MR", ... or "OT" for plain pictures
    body_part: str  # BodyPartExamined or ""
    description: str  # de-identified StudyDescription / SeriesDescription or ""
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) spacing, as DICOM PixelSpacing
    slice_thickness_mm: float | None
    source_frames: int  # frames in the input before sampling
    deid: DeidReport | None  # None for plain pictures
    window: tuple[float, float] | None  # centre, width used (in modality units) for the first frame
    headers: list[Any] = field(default_factory=list, repr=False)  # de-identified datasets in slice order, pixel data dropped


@dataclass
class _Input:
    label: str
    data: bytes
    named_dicom: bool


def load_study(
    sources: Any,
    *,
    max_frames: int = 8,
    max_files: int = 500,
    max_file_mb: float = 64.0,
    max_total_mb: float = 512.0,
    deidentify_first: bool = True,
    burned_in: str = "refuse",
    seed: str | None = None,
    ct_window: tuple[float, float] | None = None,
) -> Study:
    """Load a DICOM file, a DICOM series (one study) or plain pictures as at most ``max_frames`` 8-bit frames.

    Args:
        sources: A path or bytes, or a list of them (a series: sorted by InstanceNumber, then z position).
        max_frames: Frames kept, spread evenly over all frames and slices (first and last included).
        max_files: Most files a series may have.
        max_file_mb: Largest file accepted.
        max_total_mb: Largest series accepted, all files together.
        deidentify_first: De-identify each header before anything else reads it; False only for tests.
        burned_in: "refuse" scans with burned-in text, or "mask" their top and bottom bands.
        seed: Reproducible pseudonyms; by default a new random one per call, shared by the series' files.
        ct_window: For CT, this window (centre, width in HU) instead of the file's: a model reads CT at the window
            it was trained with, whatever window the scanner stored for display.

    Raises:
        AssistantError: Any problem with the input, naming the file by its place, never by its name.
    """
    if max_frames < 1 or max_files < 1 or max_file_mb <= 0 or max_total_mb <= 0:
        raise AssistantError("max_frames, max_files, max_file_mb and max_total_mb must be positive")
    inputs = _read_inputs(_as_list(sources), max_files, max_file_mb, max_total_mb)
    kinds = [_kind(item) for item in inputs]
    if all(kind == "picture" for kind in kinds):
        return _picture_study(inputs, max_frames, max_file_mb)
    if "picture" in kinds:
        raise AssistantError("a series mixes DICOM files and plain pictures; send them separately")
    if not deidentify_first:
        logger.warning("de-identification is switched off: headers and pixels are used as they are")
    series_seed = seed if seed is not None else secrets.token_hex(16)  # one seed: the files' pseudonyms agree
    parsed = [_read_dicom(item, deidentify_first, burned_in, series_seed, max_total_mb) for item in inputs]
    _check_one_study(parsed)
    parsed.sort(key=lambda entry: _slice_key(entry[1]))
    return _dicom_study(parsed, max_frames, ct_window)


def file_label(position: int, total: int, source: Any) -> str:
    """How errors and logs name an input: its place and a known extension, never its name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        kind = "bytes"
    else:
        suffix = Path(str(source)).suffix.lower()
        kind = suffix if suffix in DICOM_SUFFIXES | PICTURE_SUFFIXES else "no known extension"
    return f"file {position} of {total} ({kind})"


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``total`` items, first and last included (the middle one if count is 1)."""
    if total <= count:
        return list(range(total))
    if count == 1:
        return [total // 2]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def _as_list(sources: Any) -> list[Any]:
    items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    if not items or (len(items) == 1 and isinstance(items[0], (bytes, bytearray)) and not items[0]):
        raise AssistantError("no DICOM file or picture was given")
    return items


def _read_inputs(items: list[Any], max_files: int, max_file_mb: float, max_total_mb: float) -> list[_Input]:
    """Every input's size is checked (paths by stat) before any is read."""
    if len(items) > max_files:
        raise AssistantError(f"the series has {len(items)} files, over the limit of {max_files}; nothing was read")
    labels = [file_label(position, len(items), item) for position, item in enumerate(items, start=1)]
    sizes = [_size(item, label) for item, label in zip(items, labels)]
    for size, label in zip(sizes, labels):
        if size > max_file_mb * 2**20:
            raise AssistantError(f"{label} is {size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit for one file")
        if size == 0:
            raise AssistantError(f"{label} is empty")
    if sum(sizes) > max_total_mb * 2**20:
        raise AssistantError(
            f"the series is {sum(sizes) / 2**20:.1f} MB in {len(items)} files, over the {max_total_mb:g} MB limit; "
            "nothing was read"
        )
    inputs = []
    for item, label in zip(items, labels):
        named_dicom = not isinstance(item, (bytes, bytearray, memoryview)) and Path(str(item)).suffix.lower() in DICOM_SUFFIXES
        inputs.append(_Input(label, _bytes_of(item, label), named_dicom))
    return inputs


def _size(item: Any, label: str) -> int:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return len(item)
    if not isinstance(item, (str, Path)):
        raise AssistantError(f"{label} is a {type(item).__name__}, not a path or bytes")
    path = Path(item)
    if path.is_dir():
        raise AssistantError(f"{label} is a folder; pass the files in it")
    try:
        return path.stat().st_size
    except OSError:
        raise AssistantError(f"{label} was not found") from None


def _bytes_of(item: Any, label: str) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    try:
        return Path(item).read_bytes()
    except OSError:
        raise AssistantError(f"{label} could not be read") from None


def _kind(item: _Input) -> str:
    """"dicom" or "picture" from the content; a name that says DICOM must hold DICOM."""
    data = item.data
    if data[128:132] == b"DICM":
        return "dicom"
    looks = "a PNG picture" if data.startswith(_PNG_MAGIC) else "a JPEG picture" if data.startswith(_JPEG_MAGIC) else None
    if item.named_dicom:
        what = f"; it is {looks}" if looks else ""
        raise AssistantError(f"{item.label} is named as DICOM but is not a DICOM file (no 'DICM' marker at byte 128{what})")
    if looks is None:
        raise AssistantError(f"{item.label} is neither DICOM (no 'DICM' marker at byte 128) nor a PNG or JPEG picture")
    return "picture"


def _read_dicom(
    item: _Input, deidentify_first: bool, burned_in: str, seed: str, max_decoded_mb: float
) -> tuple[str, Any, DeidReport | None]:
    """Parse one file, check what can be checked without patient data, then de-identify it."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    label = item.label
    with quiet_pydicom():
        try:
            dataset = pydicom.dcmread(io.BytesIO(item.data), force=False)
            _check_not_cut_short(dataset, label)
            for _ in dataset.iterall():  # parse every element now, so a header cut inside a sequence fails here
                pass
            if dataset.file_meta is not None:
                list(dataset.file_meta.iterall())
        except AssistantError:
            raise
        except InvalidDicomError:
            raise AssistantError(f"{label} is not a valid DICOM file") from None
        except Exception:  # the parser meets untrusted bytes: any failure means the file is broken
            raise AssistantError(f"{label} is truncated or corrupt: its header could not be read") from None
        _check_pixels_readable(dataset, label, max_decoded_mb)
    if not deidentify_first:
        return label, dataset, None
    try:
        report = deidentify(dataset, seed=seed, burned_in=burned_in)
    except AssistantError as error:
        raise AssistantError(f"{label}: {error}") from None
    except Exception as error:  # malformed values dicognito cannot parse: refuse rather than pass them on
        logger.debug("de-identification failed with %s", type(error).__name__)
        raise AssistantError(f"{label} could not be de-identified (malformed header values) and was not used") from None
    return label, dataset, report


def _check_not_cut_short(dataset: Any, label: str) -> None:
    """pydicom stops quietly at the end of a cut file: the last element then holds fewer bytes than it declares."""
    if len(dataset) == 0:
        raise AssistantError(f"{label} is truncated or corrupt: it holds no data elements after its file meta")
    last = dataset.get_item(max(dataset.keys()))  # the raw element, not yet converted
    declared, value = getattr(last, "length", None), getattr(last, "value", None)
    if declared not in (None, _UNDEFINED_LENGTH) and isinstance(value, bytes) and len(value) < declared:
        raise AssistantError(f"{label} is truncated or corrupt: its last element holds {len(value)} of {declared} bytes")


def _check_pixels_readable(dataset: Any, label: str, max_decoded_mb: float) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length, get_nr_frames
    from pydicom.uid import UID

    if "PixelData" not in dataset:
        float_data = "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset
        if float_data:
            raise AssistantError(f"{label} has floating-point pixel data, which is not supported")
        sop_class = UID(str(dataset.get("SOPClassUID", "")))
        kind = f"a {sop_class.name} object" if sop_class.is_valid and sop_class.name != sop_class else "an object"
        raise AssistantError(f"{label} has no pixel data: it is {kind}, not an image (or it was cut short)")
    syntax = dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta is not None else None
    if not syntax:
        raise AssistantError(f"{label} does not say its transfer syntax, so its pixels cannot be decoded")
    syntax = UID(str(syntax))
    if syntax.is_encapsulated:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise AssistantError(
                f"{label} uses the transfer syntax {syntax.name} ({syntax}), which no pixel decoder supports"
            ) from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise AssistantError(f"{label} uses the transfer syntax {syntax.name}, whose decoder is not installed ({needs})")
    else:
        expected, held = get_expected_length(dataset, "bytes"), len(dataset.PixelData)
        if held < expected:
            raise AssistantError(f"{label} is truncated: its pixel data holds {held} of {expected} bytes")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise AssistantError(f"{label} declares no picture size (Rows x Columns)")
    if rows * columns > MediaConfig().max_image_pixels:
        raise AssistantError(f"{label} is {columns}x{rows} pixels a frame, over the limit (possible decompression bomb)")
    decoded = get_nr_frames(dataset, warn=False) * rows * columns * int(dataset.get("SamplesPerPixel", 1) or 1)
    decoded *= math.ceil(int(dataset.get("BitsAllocated", 8) or 8) / 8)
    if decoded > max_decoded_mb * 2**20:  # masking burned-in text decodes a whole file at once
        raise AssistantError(f"{label} decodes to {decoded / 2**20:.0f} MB of pixels, over the {max_decoded_mb:g} MB limit")


def _check_one_study(parsed: list[tuple[str, Any, DeidReport | None]]) -> None:
    first_label, first, _ = parsed[0]
    study = str(first.get("StudyInstanceUID", ""))
    for label, dataset, _ in parsed[1:]:
        if str(dataset.get("StudyInstanceUID", "")) != study:
            raise AssistantError(f"{label} belongs to another study than {first_label}; send one study at a time")


def _slice_key(dataset: Any) -> tuple[float, float]:
    """InstanceNumber, then the z of ImagePositionPatient; files without them keep their order (stable sort)."""
    return _number(dataset.get("InstanceNumber"), math.inf), _number((dataset.get("ImagePositionPatient") or [0, 0, 0])[-1], 0.0)


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _dicom_study(parsed: list[tuple[str, Any, DeidReport | None]], max_frames: int, ct_window: Any) -> Study:
    from pydicom.pixels.utils import get_nr_frames

    first = parsed[0][1]
    window = ct_window if str(first.get("Modality", "")) == "CT" else None

    with quiet_pydicom():
        counts = [get_nr_frames(dataset, warn=False) for _, dataset, _ in parsed]
        every_frame = [(position, frame) for position, count in enumerate(counts) for frame in range(count)]
        chosen = [every_frame[index] for index in spread_indices(len(every_frame), max_frames)]
        frames: list[Image.Image] = []
        windows: list[tuple[float, float] | None] = []
        for position, (label, dataset, _) in enumerate(parsed):
            wanted = [frame for at, frame in chosen if at == position]
            if wanted:
                pictures, used = frames_of(dataset, wanted, label, window)
                frames.extend(pictures)
                windows.extend(used)
        view = pixel_view(first, 0)
        reports = [report for _, _, report in parsed if report is not None]
        descriptions = [str(first.get(keyword, "") or "").strip() for keyword in ("StudyDescription", "SeriesDescription")]
        study = Study(
            frames=frames,
            modality=str(first.get("Modality", "") or "OT"),
            body_part=str(first.get("BodyPartExamined", "") or ""),
            description=" / ".join(dict.fromkeys(text for text in descriptions if text)),
            pixel_spacing_mm=_spacing(view.get("PixelSpacing")),
            slice_thickness_mm=_positive(view.get("SliceThickness")),
            source_frames=len(every_frame),
            deid=DeidReport.combine(reports) if reports else None,
            window=windows[0] if windows else None,
            headers=[_without_pixels(dataset) for _, dataset, _ in parsed],
        )
    logger.info("loaded a %s study: %d of %d frames from %d files", study.modality, len(frames), len(every_frame), len(parsed))
    return study


def _spacing(value: Any) -> tuple[float, float] | None:
    try:
        row, column = (float(part) for part in value)
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 and math.isfinite(row + column) else None


def _positive(value: Any) -> float | None:
    number = _number(value, math.nan)
    return number if number > 0 else None


def _without_pixels(dataset: Any) -> Any:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in dataset:
            delattr(dataset, keyword)
    return dataset


def _picture_study(inputs: list[_Input], max_frames: int, max_file_mb: float) -> Study:
    """Plain pictures through ``assistant.media`` (decompression-bomb limit); grey ones become "L"."""
    from assistant.media import load_frame

    limits = MediaConfig(max_file_mb=max_file_mb)
    frames = []
    for index in spread_indices(len(inputs), max_frames):
        item = inputs[index]
        try:
            rgb = load_frame(item.data, limits).image
        except MediaError as error:
            raise MediaError(f"{item.label} could not be read as a picture: {error}") from None
        array = np.asarray(rgb)
        grey = bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())
        frames.append(rgb.convert("L") if grey else rgb)
    logger.info("loaded %d of %d plain pictures", len(frames), len(inputs))
    return Study(frames, "OT", "", "", None, None, len(inputs), None, None)
