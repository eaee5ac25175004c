"""Draft radiology reports: validation messages, bounded schemas, safe Markdown, FHIR round trips."""

from __future__ import annotations

import base64
import copy
import json
import random
from datetime import datetime, timezone

import jsonschema
import pytest

from assistant.errors import AssistantError
from plugins.medical.report import (
    DISCLAIMER,
    MAX_FINDINGS,
    DraftReport,
    findings_schema,
    from_fhir,
    render_markdown,
    report_schema,
    to_fhir,
    validate_report,
)

NASTY = "liver | <script>alert(1)</script> \n *bold* _it_ `code` [x](y) # &amp;"


def finding(**changes) -> dict:
    return {"location": "liver, right lobe", "description": "hypodense lesion", "size_mm": 12.5, "confidence": "medium"} | changes


def report_data(**changes) -> dict:
    data = {
        "examination": "CT abdomen with contrast",
        "modality": "CT",
        "body_part": "abdomen",
        "technique": "Portal venous phase, 1 mm slices.",
        "findings": [finding(), finding(location="left kidney", description="simple cyst", size_mm=None, confidence="high")],
        "impression": "Probable benign liver lesion.",
        "limitations": "Single phase; no prior studies.",
        "model": "tiny-vlm",
        "adapter": "radiology-lora-v0",
    }
    return data | changes


# Validation -----------------------------------------------------------------------------------


def test_good_report_validates_from_dict_and_json():
    report = validate_report(report_data())
    assert report.disclaimer == DISCLAIMER
    assert report.findings[1].size_mm is None
    assert validate_report(json.dumps(report_data())) == report
    assert validate_report(report.model_dump_json()) == report


BAD = {
    "extra field": (report_data(patient_name="Jane Doe"), ["patient_name", "Extra inputs are not permitted"]),
    "extra finding field": (report_data(findings=[finding(colour="red")]), ["findings.0.colour", "not permitted"]),
    "size zero": (report_data(findings=[finding(size_mm=0)]), ["findings.0.size_mm", "greater than 0"]),
    "size 600": (report_data(findings=[finding(size_mm=600)]), ["findings.0.size_mm", "less than or equal to 500"]),
    "size as text": (report_data(findings=[finding(size_mm="12")]), ["findings.0.size_mm", "valid number"]),
    "21 findings": (report_data(findings=[finding()] * 21), ["findings", "at most 20"]),
    "wrong confidence": (report_data(findings=[finding(confidence="certain")]), ["findings.0.confidence", "'high'"]),
    "findings not a list": (report_data(findings="none"), ["findings", "valid list"]),
    "location too long": (report_data(findings=[finding(location="x" * 81)]), ["findings.0.location", "at most 80"]),
    "blank description": (report_data(findings=[finding(description="   ")]), ["findings.0.description", "at least 1"]),
    "control character": (report_data(impression="ok\x00"), ["impression", "control character"]),
    "missing impression": ({k: v for k, v in report_data().items() if k != "impression"}, ["impression", "Field required"]),
    "number for text": (report_data(modality=5), ["modality", "valid string"]),
    "not JSON": ('{"examination": "CT"', ["not valid JSON", "line 1"]),
    "JSON array": ("[1, 2]", ["must be a JSON object", "list"]),
    "not a dict": (42, ["must be a JSON object", "int"]),
}


@pytest.mark.parametrize("data, expected", BAD.values(), ids=BAD.keys())
def test_bad_report_is_rejected_with_a_clear_message(data, expected):
    with pytest.raises(AssistantError) as caught:
        validate_report(data)
    message = str(caught.value)
    for part in expected:
        assert part in message
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no chained traceback


def test_report_without_the_disclaimer_value_is_rejected():
    # Omitted, the disclaimer is filled in; present, it must be exactly the disclaimer.
    assert validate_report(report_data()).disclaimer == DISCLAIMER
    for value in ["", None, "Final diagnosis.", DISCLAIMER.replace("not ", "")]:
        with pytest.raises(AssistantError, match="disclaimer"):
            validate_report(report_data(disclaimer=value))


def test_deeply_nested_json_is_rejected_not_crashed():
    with pytest.raises(AssistantError, match="JSON"):
        validate_report("[" * 100_000 + "]" * 100_000)


# Schemas --------------------------------------------------------------------------------------


def unbounded(schema, path="$") -> list[str]:
    """Paths of string nodes without maxLength (or a fixed enum/const) and arrays without maxItems."""
    problems = []
    if isinstance(schema, dict):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "string" in types and "maxLength" not in schema and "enum" not in schema and "const" not in schema:
            problems.append(path)
        if "array" in types and "maxItems" not in schema:
            problems.append(path)
        for key, value in schema.items():
            problems += unbounded(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            problems += unbounded(value, f"{path}[{index}]")
    return problems


def count_strings(schema) -> int:
    if isinstance(schema, dict):
        return (schema.get("type") == "string") + sum(count_strings(value) for value in schema.values())
    if isinstance(schema, list):
        return sum(count_strings(value) for value in schema)
    return 0


def test_the_bound_checker_itself_finds_unbounded_nodes():
    assert unbounded({"properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {}}}}) == [
        "$.properties.a",
        "$.properties.b",
    ]


@pytest.mark.parametrize("make_schema, strings", [(report_schema, 12), (findings_schema, 3)])
def test_every_schema_string_and_array_is_bounded(make_schema, strings):
    schema = make_schema()
    assert count_strings(schema) == strings  # the checker really walked the fields
    assert unbounded(schema) == []
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Finding"]["additionalProperties"] is False


def test_findings_schema_agrees_with_the_model():
    schema = findings_schema()
    good = {"findings": [finding(), finding(size_mm=None)]}
    jsonschema.validate(good, schema)
    too_many, extra, zero = [finding()] * (MAX_FINDINGS + 1), [finding(extra=1)], [finding(size_mm=0)]
    for bad in [{"findings": too_many}, {"findings": extra}, {"findings": zero}, {}]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


# Markdown -------------------------------------------------------------------------------------


def parse_markdown(markdown: str) -> tuple[list[list[str]], set[str]]:
    """The table's body cells (``<br>`` read as a newline) and every HTML tag, as CommonMark + GFM read them."""
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(markdown)
    tags = {token.content for token in tokens if token.type == "html_block"}
    inline = [child for token in tokens if token.type == "inline" for child in token.children]
    tags |= {child.content for child in inline if child.type == "html_inline"}
    rows, in_body = [], False
    for token in tokens:
        in_body = token.type == "tbody_open" or (in_body and token.type != "tbody_close")
        if in_body and token.type == "tr_open":
            rows.append([])
        elif in_body and token.type == "inline":
            assert {child.type for child in token.children} <= {"text", "html_inline"}, "Markdown leaked into a cell"
            rows[-1].append("".join("\n" if child.type == "html_inline" else child.content for child in token.children))
    return rows, tags


@pytest.mark.parametrize("findings", [[], [finding()]], ids=["no findings", "one finding"])
def test_markdown_has_the_disclaimer_at_top_and_bottom(findings):
    markdown = render_markdown(validate_report(report_data(findings=findings)))
    lines = [line for line in markdown.splitlines() if line.strip()]
    assert lines[1] == f"**{DISCLAIMER}**" and lines[-1] == f"**{DISCLAIMER}**"  # verbatim: a reader sees the plain words
    assert ("No findings." in markdown) == (not findings)
    assert ("| Location | Description | Size | Confidence |" in markdown) == bool(findings)


def test_hostile_values_cannot_break_the_table_or_inject_html():
    findings = [finding(location=NASTY, description=NASTY), finding(size_mm=None)]
    data = {key: NASTY for key in ["examination", "body_part", "technique", "impression", "limitations", "model"]}
    report = validate_report(report_data(findings=findings, **data))
    markdown = render_markdown(report)
    assert "<script" not in markdown and "<br>" in markdown
    assert markdown.replace("<br>", "").count("<") == 0
    rows, tags = parse_markdown(markdown)
    assert tags == {"<br>"}
    assert rows == [
        [NASTY.strip(), NASTY.strip(), "12.5 mm", "medium"],
        ["liver, right lobe", "hypodense lesion", "not measured", "medium"],
    ]


# FHIR -----------------------------------------------------------------------------------------

ALPHABET = "abcdefghij XYZ 0123456789 .,;:-_|*`<>&#[]()!~$\\/\"' \n\t éßü漢字🙂"


def random_text(rng: random.Random, max_length: int) -> str:
    length = rng.choice([1, max_length, rng.randint(1, max_length)])
    text = "".join(rng.choice(ALPHABET) for _ in range(length)).strip()
    return text or "x"


def random_report(rng: random.Random) -> DraftReport:
    def size():
        return rng.choice([None, rng.uniform(1e-3, 500.0), 500.0, round(rng.uniform(0.1, 80.0), 1)])

    findings = [
        {
            "location": random_text(rng, 80),
            "description": random_text(rng, 200),
            "size_mm": size(),
            "confidence": rng.choice(["low", "medium", "high"]),
        }
        for _ in range(rng.choice([0, MAX_FINDINGS, rng.randint(1, MAX_FINDINGS)]))
    ]
    lengths = {"examination": 200, "modality": 64, "body_part": 80, "technique": 1000, "impression": 2000,
               "limitations": 1000, "model": 200, "adapter": 200}  # fmt: skip
    return validate_report({"findings": findings} | {field: random_text(rng, n) for field, n in lengths.items()})


def fhir_class():
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    return DiagnosticReport


def test_fhir_export_is_a_preliminary_radiology_report():
    report = validate_report(report_data())
    exported = to_fhir(report, subject_reference="Patient/anon-1", issued=datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc))
    fhir_class().model_validate(exported)
    assert exported["resourceType"] == "DiagnosticReport" and exported["status"] == "preliminary"
    radiology = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
    assert exported["category"] == [{"coding": [radiology]}]
    assert exported["code"]["coding"][0]["code"] == "18748-4"
    assert exported["conclusion"] == report.impression
    assert exported["subject"] == {"reference": "Patient/anon-1"}
    assert exported["issued"].startswith("2024-05-01T09:30:00")
    observations = exported["contained"]
    assert [result["reference"] for result in exported["result"]] == ["#" + obs["id"] for obs in observations]
    assert all(obs["status"] == "preliminary" for obs in observations)
    assert observations[0]["bodySite"] == {"text": "liver, right lobe"}
    assert observations[0]["valueString"] == "hypodense lesion"
    size = observations[0]["component"][0]["valueQuantity"]
    assert size == {"value": 12.5, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}
    assert "component" not in observations[1]  # no size: no measurement


def test_fhir_export_carries_the_disclaimer_and_no_identity_by_default():
    report = validate_report(report_data(findings=[]))
    exported = to_fhir(report)
    text = json.dumps(exported, ensure_ascii=False)
    assert text.count(DISCLAIMER) >= 2  # the extension and the narrative a FHIR viewer shows
    assert DISCLAIMER in exported["text"]["div"]
    form = exported["presentedForm"][0]
    assert form["contentType"].startswith("text/markdown")
    assert base64.b64decode(form["data"]).decode("utf-8") == render_markdown(report)
    assert "subject" not in exported and "contained" not in exported and "result" not in exported


def test_fhir_round_trips_random_reports():
    rng = random.Random(20240501)
    for _ in range(50):
        report = random_report(rng)
        exported = to_fhir(report)
        fhir_class().model_validate(exported)
        jsonschema.validate(report.model_dump(mode="json"), report_schema())
        assert from_fhir(json.loads(json.dumps(exported))) == report
        assert base64.b64decode(exported["presentedForm"][0]["data"]).decode("utf-8") == render_markdown(report)


def test_fhir_import_rejects_tampered_exports():
    exported = to_fhir(validate_report(report_data()))
    changes = {
        "disclaimer changed": lambda d: d["extension"][-1].update(valueString="Final diagnosis."),
        "size in cm": lambda d: d["contained"][0]["component"][0]["valueQuantity"].update(code="cm"),
        "dangling result": lambda d: d["result"].append({"reference": "#finding-9"}),
        "not a DiagnosticReport": lambda d: d.update(resourceType="Patient"),
        "impression missing": lambda d: d.pop("conclusion"),
    }
    for name, change in changes.items():
        tampered = copy.deepcopy(exported)
        change(tampered)
        with pytest.raises(AssistantError):
            from_fhir(tampered)
    assert from_fhir(exported) == validate_report(report_data())


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"subject_reference": "Jane Doe"}, "subject reference"),
        ({"subject_reference": "Patient/"}, "subject reference"),
        ({"issued": datetime(2024, 5, 1)}, "timezone"),
    ],
)
def test_fhir_export_rejects_bad_options(options, problem):
    with pytest.raises(AssistantError, match=problem):
        to_fhir(validate_report(report_data()), **options)
