"""Structured draft radiology reports: the schema a model decodes, validation, Markdown and FHIR.

A ``DraftReport`` holds the examination (from the image headers), the findings a model decoded
against ``findings_schema()``, an impression, the limitations, and the identity of the model and
adapter that wrote the findings. Every string and the findings list are bounded so a constrained
decoder cannot write forever, and the disclaimer is part of the type: no report exists without it.

``render_markdown`` shows a report in a chat with every value escaped, because values come from a
model and from files and none may break the table or inject HTML. ``to_fhir`` / ``from_fhir``
export and import an HL7 FHIR R4 DiagnosticReport with status "preliminary", since it is a draft.

FHIR models come from ``fhir.resources.R4B`` (FHIR 4.3.0): fhir.resources 8 ships R5 at the top
level plus R4B and STU3, and no R4 (4.0.1) package. R4B changed other resources only; every
element written here (DiagnosticReport, Observation, Quantity, Attachment, Extension, Narrative)
has the same name, type and cardinality in R4 4.0.1.

It knows nothing about DICOM, de-identification or how findings are produced, and it never sees
patient identity: a FHIR subject is only an opaque reference the caller may pass in.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from assistant.errors import AssistantError

DISCLAIMER = "Machine-generated draft for review by a qualified clinician. It is not a diagnosis."
MAX_FINDINGS = 20
MAX_SIZE_MM = 500.0
MAX_REPORT_JSON_CHARS = 200_000  # the longest valid report is ~11k characters, ~65k as \u-escaped JSON
MAX_ERRORS_SHOWN = 5

# FHIR codes. The extensions are this project's own; ".example" marks them as not yet published.
RADIOLOGY_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
IMAGING_STUDY_CODE = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
FINDING_CODE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "121071", "display": "Finding"}
UCUM = "http://unitsofmeasure.org"
SIZE_COMPONENT_TEXT = "Largest diameter"
EXTENSION_BASE = "http://multimodal-assistant.example/fhir/StructureDefinition/draft-report-"
REPORT_EXTENSIONS = ("modality", "body_part", "technique", "limitations", "model", "adapter", "disclaimer")
SUBJECT_REFERENCE = re.compile(r"(Patient|Group|Device|Location)/[A-Za-z0-9\-.]{1,64}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # FHIR strings allow only tab, CR, LF


def _no_control_characters(text: str) -> str:
    """Refuse control characters: FHIR forbids them and they garble terminals and chat views."""
    if match := CONTROL_CHARACTERS.search(text):
        raise ValueError(f"contains the control character {match.group()!r}")
    return text


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_no_control_characters)]
"""A stripped, non-empty string; each field adds its own ``max_length``, which reaches the schema."""


class Finding(BaseModel):
    """One finding, as the model decodes it: where, what, how big, and how sure."""

    model_config = ConfigDict(extra="forbid", strict=True)

    location: Text = Field(max_length=80, description="Organ and side, e.g. 'liver, right lobe' or 'left kidney'.")
    description: Text = Field(max_length=200, description="What is seen, e.g. 'hypodense lesion'.")
    size_mm: float | None = Field(gt=0, le=MAX_SIZE_MM, description="Largest diameter in millimetres, or null.")
    confidence: Literal["low", "medium", "high"]


class DraftReport(BaseModel):
    """A draft radiology report for a clinician to review; never a diagnosis."""

    model_config = ConfigDict(extra="forbid", strict=True)

    examination: Text = Field(max_length=200, description="The examination, e.g. 'CT abdomen with contrast'.")
    modality: Text = Field(max_length=64, description="The imaging modality, e.g. 'CT' or 'MR'.")
    body_part: Text = Field(max_length=80, description="The body part examined.")
    technique: Text = Field(max_length=1000, description="How the images were acquired.")
    findings: list[Finding] = Field(max_length=MAX_FINDINGS, description="The findings; empty when there are none.")
    impression: Text = Field(max_length=2000, description="The overall impression.")
    limitations: Text = Field(max_length=1000, description="What limits this reading, e.g. image quality.")
    model: Text = Field(max_length=200, description="The model that produced the findings.")
    adapter: Text = Field(max_length=200, description="The adapter that produced the findings.")
    disclaimer: Literal[DISCLAIMER] = DISCLAIMER


class _FindingsOutput(BaseModel):
    """What the model decodes: only the findings; the rest of a report comes from the images' headers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    findings: list[Finding] = Field(max_length=MAX_FINDINGS)


def report_schema() -> dict:
    """The JSON schema of a ``DraftReport``; strings carry maxLength and the findings maxItems."""
    return DraftReport.model_json_schema()


def findings_schema() -> dict:
    """The JSON schema of ``{"findings": [Finding, ...]}``, the part a model decodes."""
    return _FindingsOutput.model_json_schema()


def _describe(error: ValidationError, what: str) -> str:
    """One line per problem, ``field.path: message (got value)``, so the user sees where and why."""
    problems = []
    for item in error.errors()[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in item["loc"]) or "the top level"
        message = " ".join(item["msg"].split())
        if item["type"] != "missing":
            shown = repr(item["input"])
            message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        problems.append(f"{where}: {message}")
    if error.error_count() > MAX_ERRORS_SHOWN:
        problems.append(f"and {error.error_count() - MAX_ERRORS_SHOWN} more problems")
    return f"{what}: " + "; ".join(problems)


def validate_report(data: dict | str) -> DraftReport:
    """Check a report given as a dict or JSON text; raise ``AssistantError`` naming each bad field."""
    if isinstance(data, str):
        if len(data) > MAX_REPORT_JSON_CHARS:
            raise AssistantError(
                f"the draft report is {len(data)} characters of JSON; at most {MAX_REPORT_JSON_CHARS} are allowed"
            )
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno} column {error.colno}"
            raise AssistantError(f"the draft report is not valid JSON: {error.msg} at {where}") from None
        except RecursionError:
            raise AssistantError("the draft report is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise AssistantError(f"the draft report must be a JSON object, got {type(data).__name__}")
    try:
        return DraftReport.model_validate(data)
    except ValidationError as error:
        raise AssistantError(_describe(error, "invalid draft report")) from None


# Markdown ------------------------------------------------------------------------------------

# Every character that CommonMark/GFM gives a meaning gets a backslash; &, < and > become entities so
# no value can open an HTML tag. Line breaks become <br>, so each value stays on its line or cell.
_MARKDOWN_ESCAPES = {ord(char): "\\" + char for char in "\\`*_{}[]()#+-.!|~$"}
_MARKDOWN_ESCAPES |= {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def escape_markdown(text: str) -> str:
    """Make ``text`` render literally, on one line, in Markdown text and in a table cell."""
    return _LINE_BREAK.sub("<br>", text.translate(_MARKDOWN_ESCAPES))


def _size(size_mm: float | None) -> str:
    return "not measured" if size_mm is None else f"{size_mm:g} mm"


def render_markdown(report: DraftReport) -> str:
    """The report as chat Markdown, with the disclaimer in bold at the top and at the bottom."""
    e = escape_markdown
    disclaimer = f"**{DISCLAIMER}**"  # the schema admits only this constant, which needs no escaping: it reads verbatim
    lines = [
        "# Draft radiology report", "", disclaimer, "",
        f"- **Examination:** {e(report.examination)}",
        f"- **Modality:** {e(report.modality)}",
        f"- **Body part:** {e(report.body_part)}",
        f"- **Technique:** {e(report.technique)}",
        "", "## Findings", "",
    ]
    if report.findings:
        lines += ["| Location | Description | Size | Confidence |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {e(f.location)} | {e(f.description)} | {e(_size(f.size_mm))} | {e(f.confidence)} |" for f in report.findings
        ]
    else:
        lines.append("No findings.")
    lines += [
        "", "## Impression", "", e(report.impression),
        "", "## Limitations", "", e(report.limitations),
        "", "## Produced by", "",
        f"- **Model:** {e(report.model)}",
        f"- **Adapter:** {e(report.adapter)}",
        "", disclaimer,
    ]
    return "\n".join(lines) + "\n"


# FHIR ----------------------------------------------------------------------------------------


def _extension(field: str, value: str, kind: str = "valueString") -> dict:
    """One of this project's extensions; its URL ends in the field name, hyphenated."""
    return {"url": EXTENSION_BASE + field.replace("_", "-"), kind: value}


def _observation(index: int, finding: Finding, subject: dict | None) -> dict:
    """A contained, preliminary Observation for one finding; its id is what ``result`` points at."""
    observation = {
        "resourceType": "Observation",
        "id": f"finding-{index}",
        "extension": [_extension("confidence", finding.confidence, "valueCode")],
        "status": "preliminary",
        "code": {"coding": [FINDING_CODE], "text": "Finding"},
        "subject": subject,
        "valueString": finding.description,
        "bodySite": {"text": finding.location},
    }
    if finding.size_mm is not None:
        quantity = {"value": finding.size_mm, "unit": "mm", "system": UCUM, "code": "mm"}
        observation["component"] = [{"code": {"text": SIZE_COMPONENT_TEXT}, "valueQuantity": quantity}]
    return {key: value for key, value in observation.items() if value is not None}


def _narrative(report: DraftReport) -> dict:
    """Human-readable text that FHIR viewers show first, so the disclaimer is seen with the report."""
    paragraphs = [f"<b>{html.escape(report.disclaimer)}</b>", html.escape(report.examination), html.escape(report.impression)]
    div = "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>'}


def _diagnostic_report_class() -> type:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport  # heavy; only exports need it

    return DiagnosticReport


def to_fhir(report: DraftReport, *, subject_reference: str | None = None, issued: datetime | None = None) -> dict:
    """The report as an HL7 FHIR R4 DiagnosticReport (JSON dict), validated by fhir.resources.

    Args:
        report: The validated draft report.
        subject_reference: An opaque reference such as ``"Patient/anon-1"``; omitted when None.
            It must not carry identity (no names or record numbers): the export is de-identified.
        issued: When the draft was made, with a timezone; omitted when None.
    """
    subject = None
    if subject_reference is not None:
        if not SUBJECT_REFERENCE.fullmatch(subject_reference):
            raise AssistantError(
                f"the FHIR subject reference {subject_reference!r} is not of the form 'Patient/<id>' "
                "(or Group, Device, Location) with an id of letters, digits, '-' and '.'"
            )
        subject = {"reference": subject_reference}
    if issued is not None and issued.utcoffset() is None:
        raise AssistantError(f"the issue time {issued.isoformat()} has no timezone; FHIR instants need one")
    markdown = render_markdown(report).encode("utf-8")
    resource = {
        "resourceType": "DiagnosticReport",
        "text": _narrative(report),
        "contained": [_observation(index, finding, subject) for index, finding in enumerate(report.findings, 1)] or None,
        "extension": [_extension(name, getattr(report, name)) for name in REPORT_EXTENSIONS],
        "status": "preliminary",
        "category": [{"coding": [RADIOLOGY_CATEGORY]}],
        "code": {"coding": [IMAGING_STUDY_CODE], "text": report.examination},
        "subject": subject,
        "issued": issued.isoformat() if issued is not None else None,
        "result": [{"reference": f"#finding-{index}"} for index in range(1, len(report.findings) + 1)] or None,
        "conclusion": report.impression,
        "presentedForm": [
            {
                "contentType": "text/markdown; charset=utf-8",
                "data": base64.b64encode(markdown).decode("ascii"),
                "title": "Draft radiology report (not a diagnosis)",
            }
        ],
    }
    validated = _diagnostic_report_class().model_validate({k: v for k, v in resource.items() if v is not None})
    return validated.model_dump(mode="json", by_alias=True, exclude_none=True)


def _extension_values(extensions: list | None) -> dict[str, str]:
    """This project's extensions by field name; other extensions are ignored."""
    values = {}
    for extension in extensions or []:
        if extension.url.startswith(EXTENSION_BASE):
            field = extension.url.removeprefix(EXTENSION_BASE).replace("-", "_")
            values[field] = extension.valueString or extension.valueCode
    return values


def _finding(observation: Any) -> dict:
    """A finding's fields from a contained Observation written by ``_observation``."""
    size_mm = None
    for component in observation.component or []:
        if component.code.text == SIZE_COMPONENT_TEXT and component.valueQuantity is not None:
            quantity = component.valueQuantity
            if quantity.value is None or quantity.code != "mm" or quantity.system != UCUM:
                raise AssistantError(
                    f"the FHIR Observation {observation.id!r} gives its size as {quantity.value} {quantity.code!r}; "
                    "expected a value in UCUM 'mm'"
                )
            size_mm = float(quantity.value)
    return {
        "location": observation.bodySite.text if observation.bodySite else None,
        "description": observation.valueString,
        "size_mm": size_mm,
        "confidence": _extension_values(observation.extension).get("confidence"),
    }


def from_fhir(data: dict) -> DraftReport:
    """Read back a DiagnosticReport written by ``to_fhir``; ``AssistantError`` when it is not one."""
    if not isinstance(data, dict):
        raise AssistantError(f"a FHIR DiagnosticReport must be a JSON object, got {type(data).__name__}")
    try:
        resource = _diagnostic_report_class().model_validate(data)
    except ValidationError as error:
        raise AssistantError(_describe(error, "invalid FHIR DiagnosticReport")) from None
    observations = {
        item.id: item for item in resource.contained or [] if item.get_resource_type() == "Observation"
    }
    findings = []
    for result in resource.result or []:
        observation = observations.get((result.reference or "").removeprefix("#"))
        if observation is None:
            raise AssistantError(f"the FHIR DiagnosticReport result {result.reference!r} is not a contained Observation")
        findings.append(_finding(observation))
    fields = {
        **_extension_values(resource.extension),
        "examination": resource.code.text,
        "findings": findings,
        "impression": resource.conclusion,
    }
    try:
        return DraftReport.model_validate(fields)
    except ValidationError as error:
        raise AssistantError(_describe(error, "the FHIR DiagnosticReport does not hold a valid draft report")) from None
