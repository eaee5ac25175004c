"""What the medical plugin asks a domain adapter, and the one answer format it is trained to give.

A domain adapter (``training.recipes.build_phantom`` makes one) answers ``FINDINGS_PROMPT`` about a
de-identified frame with ``{"findings": [...]}``, each finding in the report schema's field order
(``plugins.medical.report.Finding``). The training rows are written by ``findings_json`` and the
plugin decodes the same text under the schema, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

FINDINGS_PROMPT = "Report the findings of this scan as JSON."
FINDING_FIELDS = ("location", "description", "size_mm", "confidence")


def findings_json(findings: list[dict[str, Any]]) -> str:
    """The canonical answer text: compact JSON, fields in schema order."""
    ordered = [{name: finding[name] for name in FINDING_FIELDS} for finding in findings]
    return json.dumps({"findings": ordered}, separators=(", ", ": "))


def organs_phrase(organs: list[str]) -> str:
    """"the liver", "the liver and the spleen", "the liver, the spleen and the left kidney"; "none"."""
    named = [f"the {organ}" for organ in organs]
    if not named:
        return "none"
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


TARGET_SPACING_MM = 1.75   # the phantom adapter's training spacing (training.data.phantoms.SPACING_MM)
FRAME_SIZE = 224
# The window CT is read at (centre, width in HU), whatever the file stores for display: the phantom adapter's
# training window, so a scanner's other display window (the independent check stores 50/350) changes nothing.
# A narrower soft-tissue window (80/200) was worse (runs/phantom_v2: held-out presence 64%, count 39%): it
# amplifies the noise as much as the lesions and saturates the kidneys.
CT_WINDOW = (40.0, 400.0)
MAX_FINDINGS_TOKENS = 400
# Acquisition noise is smoothed away before the frozen encoder sees a frame: a Gaussian of this sigma (pixels at
# TARGET_SPACING_MM, so 3.5 mm). The ImageNet encoder's features tell small, faint lesions from noise far better on
# the smoothed frame: four trained organ queries over the frozen block-5 tokens (benchmarks/probe_phantom_reading.py,
# 1200 training and 200 held-out phantoms) named the exact set of lesion organs in 77% of held-out studies at sigma 0,
# 81.5% at 1, 87.5% at 1.5, 89.5% at 2 and 83% at 2.5.
DENOISE_SIGMA_PX = 2.0


def at_training_spacing(frame: Any, spacing_mm: tuple[float, float] | None) -> Any:
    """The frame resampled to ``TARGET_SPACING_MM`` per pixel and centred on a ``FRAME_SIZE`` square (black
    border), so a lesion covers as many pixels as in training whatever the scanner's field of view.
    Without a known spacing (a plain picture) the frame is only fitted into the square."""
    from PIL import Image

    width, height = frame.size
    if spacing_mm:
        scale_x, scale_y = spacing_mm[1] / TARGET_SPACING_MM, spacing_mm[0] / TARGET_SPACING_MM  # (row, column) spacing
    else:
        scale_x = scale_y = FRAME_SIZE / max(width, height)
    size = (max(1, round(width * scale_x)), max(1, round(height * scale_y)))
    resized = frame.resize(size, Image.Resampling.BILINEAR) if size != frame.size else frame
    canvas = Image.new(frame.mode, (FRAME_SIZE, FRAME_SIZE), 0)
    canvas.paste(resized, ((FRAME_SIZE - size[0]) // 2, (FRAME_SIZE - size[1]) // 2))
    return canvas


def reading_frame(frame: Any, spacing_mm: tuple[float, float] | None, sigma_px: float = DENOISE_SIGMA_PX) -> Any:
    """The frame as the domain adapter reads it, in training and in the plugin alike: at the training spacing
    (``at_training_spacing``), then smoothed by a Gaussian of ``sigma_px`` (none at 0)."""
    from PIL import ImageFilter

    frame = at_training_spacing(frame, spacing_mm)
    return frame.filter(ImageFilter.GaussianBlur(sigma_px)) if sigma_px else frame


def read_findings(assistant: Any, study: Any, max_new_tokens: int = MAX_FINDINGS_TOKENS, cancel: Any = None) -> list[dict[str, Any]]:
    """The findings ``assistant`` (a domain adapter) drafts for ``study`` (``plugins.medical.dicom_io.Study``),
    decoded under the findings schema, so they parse and validate; the first frame is read (``reading_frame``).

    Raises:
        AssistantError: The study has no frame, or the findings did not fit in ``max_new_tokens``.
    """
    from assistant.errors import AssistantError
    from plugins.medical.report import findings_schema

    if not study.frames:
        raise AssistantError("the study has no frame to read")
    frame = reading_frame(study.frames[0], study.pixel_spacing_mm)
    messages = [{"role": "user", "content": [{"type": "image", "image": frame}, {"type": "text", "text": FINDINGS_PROMPT}]}]
    reply = assistant.chat(messages, response_schema=findings_schema(), max_new_tokens=max_new_tokens, temperature=0.0, cancel=cancel)
    try:
        return json.loads(reply)["findings"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AssistantError(f"the findings did not fit in {max_new_tokens} tokens (the report was cut); raise max_new_tokens") from None
