"""DICOM pixel values to 8-bit grey levels: the Modality LUT (rescale), then a window, the VOI LUT or a
min-max stretch; MONOCHROME1 inverted, padding black, palette colour expanded.

``plugins.medical.dicom_io`` calls it on de-identified datasets only. Errors name a file by its label,
never by a header value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from assistant.errors import AssistantError

_VIEW_KEYWORDS = (
    "PhotometricInterpretation", "BitsStored", "PixelRepresentation", "PixelPaddingValue", "ModalityLUTSequence",
    "VOILUTSequence", "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "PixelSpacing", "SliceThickness",
)


def frames_of(dataset: Any, wanted: list[int], label: str, window: Any) -> tuple[list[Image.Image], list[tuple[float, float] | None]]:
    """Decode the ``wanted`` frames of one file to 8-bit pictures, with the window each used."""
    from pydicom.pixels import iter_pixels

    try:
        decoded = list(iter_pixels(dataset, indices=wanted))
    except Exception:  # decoders raise many types on broken data; the file is unusable either way
        raise AssistantError(f"{label}: its pixel data could not be decoded (corrupt or cut short)") from None
    pictures, windows = [], []
    for frame, pixels in zip(wanted, decoded):
        picture, used = _to_8bit(pixels, dataset, frame, label, window)
        pictures.append(picture)
        windows.append(used)
    if all(_one_level(picture) for picture in pictures):
        raise AssistantError(_single_level_message(label, windows[0]))
    return pictures, windows


def _one_level(picture: Image.Image) -> bool:
    extrema = picture.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(low == high for low, high in bands)


def _single_level_message(label: str, window: tuple[float, float] | None) -> str:
    if window is None:
        return f"{label}: every pixel has the same value, so the picture is blank"
    centre, width = window
    return f"{label}: its window (centre {centre:g}, width {width:g}) leaves a single grey level, so the picture would be blank"


def _to_8bit(pixels: np.ndarray, dataset: Any, frame: int, label: str, window: Any = None) -> tuple[Image.Image, tuple[float, float] | None]:
    from pydicom.pixels import apply_color_lut

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)  # (H, W, 3), 8 or 16 bits as the palette's entries
        top = 255.0 if pixels.dtype == np.uint8 else 65535.0
    else:
        top = float(2 ** int(dataset.get("BitsStored", 8)) - 1)
    if pixels.ndim == 3:  # (H, W, 3): colour, YBR already decoded to RGB
        rgb = np.clip(np.round(pixels.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB"), None
    return _grey_to_8bit(pixels, pixel_view(dataset, frame), photometric, label, window)


def _grey_to_8bit(
    pixels: np.ndarray, view: Any, photometric: str, label: str, window: Any = None
) -> tuple[Image.Image, tuple[float, float] | None]:
    """Modality LUT, then ``window`` or the file's (or its VOI LUT, or a min-max stretch) to 0..255; MONOCHROME1 inverted; padding black."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(pixels, view), dtype=np.float64)  # (H, W)
    padding = pixels == view.PixelPaddingValue if "PixelPaddingValue" in view else np.zeros(pixels.shape, dtype=bool)
    window = window or _window(view, label)
    if window is not None:
        # window into an 8-bit range: a VOI module with no rescale and BitsStored 8 makes pydicom's output 0..255
        voi = Dataset()
        voi.PhotometricInterpretation, voi.BitsStored, voi.PixelRepresentation = "MONOCHROME2", 8, 0
        voi.WindowCenter, voi.WindowWidth = window
        voi.VOILUTFunction = str(view.get("VOILUTFunction", "LINEAR") or "LINEAR")
        grey = apply_voi_lut(values, voi)
    elif view.get("VOILUTSequence"):
        lut_bits = int(view.VOILUTSequence[0].LUTDescriptor[2])
        indices = np.round(values).astype(np.int64)  # a LUT is indexed by integers
        grey = apply_voi_lut(indices, view, prefer_lut=True) * (255.0 / (2**lut_bits - 1))
    else:
        body = values[~padding] if (~padding).any() else values
        low, high = float(body.min()), float(body.max())
        window = ((low + high) / 2, high - low)
        grey = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        grey = 255.0 - grey
    grey = np.where(padding, 0.0, grey)
    return Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8), "L"), window


def _window(view: Any, label: str) -> tuple[float, float] | None:
    """The first window centre and width, refused when unusable (not finite, or too narrow)."""
    if "WindowCenter" not in view or "WindowWidth" not in view:
        return None
    centre, width = (_first(view.WindowCenter), _first(view.WindowWidth))
    function = str(view.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    smallest = 1.0 if function == "LINEAR" else 0.0
    if not (math.isfinite(centre) and math.isfinite(width)) or width <= 0 or width < smallest:
        raise AssistantError(
            f"{label}: its window (centre {centre:g}, width {width:g}) is unusable: the width must be a finite "
            f"number of at least {smallest:g}{' (LINEAR)' if smallest else ' and positive'}"
        )
    return centre, width


def _first(value: Any) -> float:
    """The first of a multi-valued number (the default view), as a float; NaN if it is not one."""
    try:
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return math.nan


def pixel_view(dataset: Any, frame: int) -> Any:
    """The attributes that turn one frame's values into grey levels, from the dataset or, for enhanced
    multi-frame objects, from its per-frame or shared functional groups."""
    from pydicom.dataset import Dataset

    view = Dataset()
    view.file_meta = dataset.file_meta  # the byte order of OW lookup tables
    for keyword in _VIEW_KEYWORDS:
        if keyword in dataset:
            view.add(dataset[keyword])
    shared = _group_item(dataset, "SharedFunctionalGroupsSequence", 0)
    per_frame = _group_item(dataset, "PerFrameFunctionalGroupsSequence", frame)
    for groups in (shared, per_frame):  # per-frame values override shared ones
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence", "PixelMeasuresSequence"):
            for element in (_group_item(groups, sequence, 0) if groups is not None else None) or ():
                view.add(element)
    return view


def _group_item(dataset: Any, keyword: str, index: int) -> Any:
    sequence = dataset.get(keyword)
    return sequence[index] if sequence and index < len(sequence) else None
