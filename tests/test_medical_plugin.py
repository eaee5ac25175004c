"""The medical report plugin end to end on tiny models, and (marked) on the shipped phantom adapter."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("pydicom")
pytest.importorskip("presidio_analyzer")

from PIL import Image  # noqa: E402

from assistant import Assistant, AssistantError  # noqa: E402
from assistant.config import MediaConfig  # noqa: E402
from assistant.tools.calls import ToolCall  # noqa: E402
from assistant.tools.context import ToolContext  # noqa: E402
from assistant.tools.events import ToolResult  # noqa: E402
from assistant.tools.runner import ToolRunner  # noqa: E402
from assistant.tools.spec import ToolPolicy, tool_specs  # noqa: E402
from plugins.medical import tool as medical  # noqa: E402
from plugins.medical.findings import FINDINGS_PROMPT, at_training_spacing, findings_json, read_findings, reading_frame  # noqa: E402
from plugins.medical.report import DISCLAIMER, findings_schema, from_fhir, to_fhir, validate_report  # noqa: E402
from training.data.phantoms import fake_identity, make_phantom, render_hu, write_dicom  # noqa: E402


@pytest.fixture(scope="module")
def tiny_adapter(make_config, tmp_path_factory) -> str:
    config = make_config()
    config.tools.max_string_chars, config.tools.max_array_items = 10, 2
    path = tmp_path_factory.mktemp("adapter") / "tiny_domain"
    Assistant.from_config(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    for index in range(2):
        rng = random.Random(index)
        write_dicom(folder / f"scan_{index}.dcm", render_hu(make_phantom(rng, lesions=index + 1), index), fake_identity(rng, index), index, rng)
    return folder


@pytest.fixture
def plugin_env(monkeypatch, scans, tiny_adapter):
    monkeypatch.setenv(medical.FOLDER_VARIABLE, str(scans))
    monkeypatch.setenv(medical.ADAPTER_VARIABLE, tiny_adapter)
    medical.domain_assistant.cache_clear()
    yield scans
    medical.domain_assistant.cache_clear()


def call(arguments: dict, context: ToolContext) -> ToolResult:
    """Run the plugin as the tool loop does (policy, timeout, output checks), with fixed arguments."""
    runner = ToolRunner(tool_specs([medical.draft_medical_report]), MediaConfig(), context, None, False)
    [result] = [event for event in runner.run([ToolCall("draft_medical_report", arguments)]) if isinstance(event, ToolResult)]
    return result


def test_a_dicom_by_path_gives_a_validated_draft_with_the_disclaimer_and_the_frame_read(plugin_env):
    result = call({"path": "scan_0.dcm"}, ToolContext())
    assert result.ok, result.message
    text = result.message["content"][0]["text"]
    assert DISCLAIMER in text and "Removed before the model saw it" in text and "private" in text.lower()
    assert any(part["type"] == "image" for part in result.message["content"][1:])


def test_a_series_folder_and_a_conversation_picture_are_read_too(plugin_env, tmp_path):
    folder = plugin_env / "series"
    folder.mkdir(exist_ok=True)
    for index in range(3):
        rng = random.Random(f"series/{index}")
        write_dicom(folder / f"{index}.dcm", render_hu(make_phantom(rng), index), fake_identity(rng, 7), 500, rng)
    assert call({"path": "series"}, ToolContext()).ok
    picture = Image.new("L", (224, 224), 90)
    result = call({"path": ""}, ToolContext(images=[picture]))
    assert result.ok and DISCLAIMER in result.message["content"][0]["text"]


def test_an_attached_dicom_is_read_without_a_scans_folder(monkeypatch, plugin_env):
    """Uploads (the chat UI's .dcm files, the server's base64 file parts) are the user's own: no folder needed."""
    monkeypatch.delenv(medical.FOLDER_VARIABLE)
    scan = plugin_env / "scan_1.dcm"
    by_path = call({}, ToolContext(files=[str(scan)], images=[Image.new("L", (64, 64))]))
    by_bytes = call({"file": 0}, ToolContext(files=[scan.read_bytes(), b"other"]))
    for result in (by_path, by_bytes):
        assert result.ok, result.message
        assert DISCLAIMER in result.message["content"][0]["text"] and "private" in result.message["content"][0]["text"].lower()
    missing = call({"file": 3}, ToolContext(files=[str(scan)]))
    assert not missing.ok and "attached file 3 does not exist" in missing.message["content"][0]["text"]


def test_the_plugin_declares_the_attachments_it_reads():
    assert ToolPolicy.of(medical.draft_medical_report).file_types == (".dcm", ".dicom")


@pytest.mark.parametrize("path, problem", [("../outside.dcm", "outside"), ("missing.dcm", "no such file"), ("/etc/passwd", "outside")])
def test_paths_outside_the_allowed_folder_or_missing_are_refused(plugin_env, path, problem):
    result = call({"path": path}, ToolContext())
    assert not result.ok and problem in result.message["content"][0]["text"]


def test_reading_by_path_is_off_unless_a_folder_is_allowed(monkeypatch, tiny_adapter):
    monkeypatch.delenv(medical.FOLDER_VARIABLE, raising=False)
    result = call({"path": "scan_0.dcm"}, ToolContext())
    assert not result.ok and medical.FOLDER_VARIABLE in result.message["content"][0]["text"]


def test_a_report_cut_by_the_token_limit_is_a_clear_error(tiny_adapter, scans):
    study = medical.load(scans / "scan_0.dcm")
    with pytest.raises(AssistantError, match="did not fit in 3 tokens"):
        read_findings(medical.domain_assistant(tiny_adapter), study, max_new_tokens=3)


def test_the_training_answer_is_laid_out_as_the_grammar_writes_it():
    findings = [{"location": "liver", "description": "hypodense lesion", "size_mm": 14, "confidence": "high"}]
    text = findings_json(findings)
    assert text == json.dumps(json.loads(text), separators=(", ", ": "))
    import jsonschema

    jsonschema.validate(json.loads(text), findings_schema())
    assert FINDINGS_PROMPT.endswith("JSON.")


def test_frames_are_resampled_to_the_training_spacing():
    frame = Image.new("L", (256, 256), 0)
    frame.paste(255, (100, 100, 140, 140))            # 40 px at 1.5 mm = 60 mm
    resampled = at_training_spacing(frame, (1.5, 1.5))
    assert resampled.size == (224, 224)
    width = sum(1 for x in range(224) if resampled.getpixel((x, 112)) > 127)
    assert abs(width * 1.75 - 60) <= 2 * 1.75         # still 60 mm, now at 1.75 mm per pixel


def test_the_plugin_shows_the_adapter_the_frame_its_training_rows_were_made_of(tmp_path):
    """One pixel path: the PNG a training row points at equals, pixel for pixel, the frame the plugin reads."""
    import numpy as np

    from plugins.medical.dicom_io import load_study
    from plugins.medical.findings import CT_WINDOW
    from training.data.phantom_rows import build_split

    build_split(tmp_path, "test", 2)
    shown = []

    class Reader:  # stands in for the domain adapter; keeps the picture it is shown
        def chat(self, messages, **_):
            shown.append(messages[0]["content"][0]["image"])
            return '{"findings": []}'

    assistant = Reader()
    for index in range(2):
        read_findings(assistant, load_study(tmp_path / "dicom" / f"test_{index:05d}.dcm", max_frames=1, ct_window=CT_WINDOW))
        row_image = np.asarray(Image.open(tmp_path / "images" / f"test_{index:05d}.png"))
        assert np.array_equal(np.asarray(shown[index]), row_image)


def test_the_reading_frame_smooths_noise_but_keeps_a_lesion():
    import numpy as np

    rng = np.random.default_rng(0)
    pixels = np.full((224, 224), 120.0)
    yy, xx = np.mgrid[0:224, 0:224]
    pixels[(xx - 112) ** 2 + (yy - 112) ** 2 <= 3 ** 2] += 30        # an 8-10 mm lesion, 30 grey levels brighter
    noisy = Image.fromarray(np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8))
    read = np.asarray(reading_frame(noisy, (1.75, 1.75)), dtype=np.float64)
    assert read.shape == (224, 224)
    background = read[20:80, 20:80]
    assert background.std() < 12 / 3                                # the noise is mostly gone
    assert read[112, 112] - background.mean() > 8                   # the lesion still stands out


def test_fhir_export_of_a_draft_round_trips(plugin_env):
    draft = medical.draft(medical.load(plugin_env / "scan_1.dcm"))
    assert from_fhir(to_fhir(draft.report)) == validate_report(draft.report.model_dump())


@pytest.mark.integration
def test_the_shipped_phantom_adapter_counts_the_lesions_of_a_held_out_phantom(monkeypatch, tmp_path):
    """The real default assistant runs the forced plugin call; the phantom adapter drafts the findings."""
    if not (medical.PHANTOM_ADAPTER / "assistant_config.json").is_file():
        pytest.fail("the phantom adapter is not installed: python -m training.recipes.build_phantom --install")
    rng = random.Random("integration/held-out")  # a seed the recipe's splits never use
    phantom = make_phantom(rng, lesions=2)
    write_dicom(tmp_path / "held_out.dcm", render_hu(phantom, 3), fake_identity(rng, 4242), 4242, rng)
    monkeypatch.setenv(medical.FOLDER_VARIABLE, str(tmp_path))
    monkeypatch.delenv(medical.ADAPTER_VARIABLE, raising=False)
    medical.domain_assistant.cache_clear()
    result = call({"path": "held_out.dcm"}, ToolContext(assistant=Assistant.from_pretrained()))
    assert result.ok, result.message
    draft = medical.draft(medical.load(tmp_path / "held_out.dcm"))
    assert len(draft.report.findings) == len(phantom.lesions) == 2, draft.markdown


def test_phantom_scores_count_presence_location_and_size_within_a_quarter():
    from training.phantom_eval import score_study, summarise

    truth = [{"location": "liver", "size_mm": 20}, {"location": "left kidney", "size_mm": 10}]
    exact = score_study([{"location": "liver", "size_mm": 24}, {"location": "left kidney", "size_mm": 13}], truth)
    assert exact == {"presence": True, "count": True, "location": True, "sizes": [True, False]}   # 13 is 30% off
    wrong = score_study([{"location": "spleen", "size_mm": 20}], truth)
    assert wrong["presence"] and not wrong["count"] and not wrong["location"] and wrong["sizes"] == []
    empty = score_study([], [])
    assert empty["presence"] and empty["count"] and empty["location"] is None
    report = summarise([exact, wrong, empty])
    assert report["presence_accuracy"] == 1.0 and report["count_accuracy"] == 2 / 3
    assert report["location_accuracy"] == 0.5 and report["size_within_25pct"] == 0.5
