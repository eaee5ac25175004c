"""``draft_medical_report``: a structured draft report for a scan, as a chat plugin and a command line.

The order of work is the point of this module: the study is de-identified as it is read
(``dicom_io.load_study``: DICOM basic profile, private tags, burned-in text), PHI typed in the chat
is redacted before any prompt is built (``phi_text``, installed as the tool's user-text filter), the
domain adapter drafts the findings under the findings schema (``findings.read_findings``), and the
report is validated against the report schema, rendered as Markdown with the draft disclaimer, and
can be exported as a FHIR R4 ``DiagnosticReport`` (``report.to_fhir``). What was removed is said in
the result. The plugin reads files by path only inside the folder ``$MMA_MEDICAL_FOLDER`` names;
otherwise it reads the conversation's picture (a plain PNG/JPEG scan).

The domain adapter is ``$MMA_MEDICAL_ADAPTER`` (an adapter folder), else the shipped phantom adapter
(``plugins/medical/phantom_adapter``, trained by ``training.recipes.build_phantom``), which knows
synthetic phantoms only.

    python -m plugins.medical scan.dcm [more.dcm ...] [--fhir report.fhir.json] [--adapter DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Sequence

from langchain_core.tools import InjectedToolArg, ToolException

from assistant.errors import AssistantError
from assistant.tools.context import ToolContext
from plugins.base import plugin
from plugins.medical.findings import read_findings
from plugins.medical.phi_text import redact_text

logger = logging.getLogger(__name__)

FOLDER_VARIABLE = "MMA_MEDICAL_FOLDER"
ADAPTER_VARIABLE = "MMA_MEDICAL_ADAPTER"
PHANTOM_ADAPTER = Path(__file__).resolve().parent / "phantom_adapter"
PLACEHOLDER = re.compile(r"\[(NAME|DATE|ID|PHONE|EMAIL|ADDRESS|URL|AGE)\]")
ORGAN_ORDER = ("liver", "spleen", "right kidney", "left kidney")
DEIDENTIFY = True  # off only in the test that shows what would leak without it


@dataclass
class Draft:
    report: Any           # plugins.medical.report.DraftReport
    markdown: str
    removed: list[str]    # what de-identification and redaction removed, in words (never the values)
    frame: Any            # the de-identified frame the adapter read


def redact_user_text(text: str) -> str:
    """The tool's user-text filter: the chat text with PHI replaced by placeholders."""
    return redact_text(text).text if DEIDENTIFY else text


def load(sources: Any) -> Any:
    """``dicom_io.load_study``, de-identifying first; CT at the window the adapter reads (``findings.CT_WINDOW``)."""
    from plugins.medical.dicom_io import load_study
    from plugins.medical.findings import CT_WINDOW

    return load_study(sources, deidentify_first=DEIDENTIFY, ct_window=CT_WINDOW)


def adapter_path() -> Path:
    return Path(os.environ.get(ADAPTER_VARIABLE) or PHANTOM_ADAPTER)


@functools.lru_cache(maxsize=2)
def domain_assistant(adapter: str) -> Any:
    from assistant import Assistant

    if not (Path(adapter) / "assistant_config.json").is_file():
        raise AssistantError(f"no domain adapter in {adapter}: build one with python -m training.recipes.build_phantom --install, "
                             f"or set ${ADAPTER_VARIABLE}")
    return Assistant.from_pretrained(adapter)


def _impression(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "No lesion seen on this slice."
    parts = [f"{f['description']} in the {f['location']}" + (f" ({f['size_mm']:.0f} mm)" if f.get("size_mm") else "") for f in findings]
    return f"{len(findings)} lesion{'s' if len(findings) > 1 else ''}: " + "; ".join(parts) + "."


def _technique(study: Any) -> str:
    pieces = [f"{study.source_frames} frame(s) in the input, {len(study.frames)} read"]
    if study.pixel_spacing_mm:
        pieces.append(f"pixel spacing {study.pixel_spacing_mm[0]:g} x {study.pixel_spacing_mm[1]:g} mm")
    if study.slice_thickness_mm:
        pieces.append(f"slice thickness {study.slice_thickness_mm:g} mm")
    if study.window:
        pieces.append(f"window {study.window[0]:g}/{study.window[1]:g}")
    return "; ".join(pieces)


def draft(study: Any, adapter: str | Path | None = None, chat_redactions: Counter | None = None, cancel: Any = None) -> Draft:
    """Findings from the domain adapter, then the validated report and its Markdown."""
    from plugins.medical.report import render_markdown, validate_report

    adapter = str(adapter or adapter_path())
    assistant = domain_assistant(adapter)
    findings = read_findings(assistant, study, cancel=cancel)
    findings.sort(key=lambda f: ORGAN_ORDER.index(f["location"]) if f["location"] in ORGAN_ORDER else len(ORGAN_ORDER))
    report = validate_report({
        "examination": study.description or " ".join(filter(None, (study.modality, study.body_part, "study"))),
        "modality": study.modality or "unknown", "body_part": study.body_part or "not stated", "technique": _technique(study),
        "findings": findings, "impression": _impression(findings),
        "limitations": "Read from one de-identified frame by a small model trained on synthetic phantoms only; "
                       "sizes are estimates from a coarse grid of picture features.",
        "model": assistant.describe().get("llm", "unknown"), "adapter": Path(adapter).name,
    })
    removed = list(study.deid.actions) if study.deid is not None else []
    if chat_redactions:
        removed.append("from the chat: " + ", ".join(f"{count} {kind.lower()}{'s' if count > 1 else ''}" for kind, count in sorted(chat_redactions.items())))
    return Draft(report, render_markdown(report), removed, study.frames[0])


def _sources(path: str) -> list[Path]:
    """The DICOM file(s) ``path`` names, which must lie inside ``$MMA_MEDICAL_FOLDER``."""
    root = os.environ.get(FOLDER_VARIABLE)
    if not root:
        raise ToolException(f"reading scans by path is off: set ${FOLDER_VARIABLE} to the folder the plugin may read, "
                            "or attach the scan as a picture")
    base = Path(root).resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise ToolException(f"{path!r} is outside the folder the plugin may read")
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ToolException("that folder holds no files")
        return files
    if not target.is_file():
        raise ToolException("no such file in the folder the plugin may read")
    return [target]


@plugin(timeout_s=300.0, returns_media=True, user_text_filter=redact_user_text, file_types=(".dcm", ".dicom"))
def draft_medical_report(
    path: str = "",
    file: int = -1,
    image: int = -1,
    context: Annotated[ToolContext, InjectedToolArg] = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Draft a structured radiology report of a scan, for review by a clinician (a machine draft, not a diagnosis).

    Args:
        path: A DICOM file or series folder, relative to the scans folder the server allows; "" reads an attached file or a picture.
        file: Which attached file (a DICOM scan) when path is "": -1 is the latest, 0 the first ("attached file 1").
        image: Which picture of the conversation when path is "" and no file is attached: -1 is the latest, 0 the first.
    """
    if context is None:
        raise ToolException("draft_medical_report needs the conversation; run it through the assistant's tool runner")
    try:
        if path:
            sources = _sources(path)
        elif context.files:
            sources = _attachment(context.file(file))
        else:
            sources = _picture_bytes(context.image(image))
        study = load(sources)
        redactions = Counter(PLACEHOLDER.findall("\n".join(context.user_texts)))
        result = draft(study, chat_redactions=redactions, cancel=context.cancel)
    except AssistantError as error:
        raise ToolException(str(error)) from None
    removed = "\n".join(f"- {item}" for item in result.removed) or "- nothing (the picture carried no metadata)"
    return f"{result.markdown}\n\n**Removed before the model saw it**\n\n{removed}", [{"type": "image", "image": result.frame}]


def _attachment(source: Any) -> Any:
    """An attached file as ``load_study`` takes it: bytes as they are, a path (an upload the UI saved) as a Path."""
    return source if isinstance(source, (bytes, bytearray)) else Path(source)


def _picture_bytes(picture: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.medical", description="Draft a structured report for a scan.")
    parser.add_argument("files", nargs="+", help="DICOM files of one study (or one PNG/JPEG picture)")
    parser.add_argument("--adapter", default=None, help=f"domain adapter folder (default ${ADAPTER_VARIABLE} or the phantom adapter)")
    parser.add_argument("--fhir", default=None, help="also write the report as a FHIR R4 DiagnosticReport JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from plugins.medical.report import to_fhir

    try:
        result = draft(load([Path(f) for f in args.files] if len(args.files) > 1 else Path(args.files[0])), args.adapter)
    except AssistantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.markdown)
    print("\nRemoved before the model saw it:\n" + "\n".join(f"- {item}" for item in result.removed))
    if args.fhir:
        Path(args.fhir).write_text(json.dumps(to_fhir(result.report), indent=2), encoding="utf-8")
    return 0
