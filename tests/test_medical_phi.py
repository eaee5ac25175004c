"""PHI never leaks: 200 phantom studies with unique fake PHI in their tags (and in some chat messages) go
through the medical plugin by the tool loop; every prompt, log record, tool result, report, FHIR export
and file written is searched for each value. With de-identification off the same search finds them,
so the test can fail.

The chat LLM's decision to call the plugin is scripted (``ScriptedCaller``: it builds its real prompt,
which is recorded, then calls the plugin on study i); the domain adapter is a tiny random model saved
to a folder, decoding its findings under the schema. What is tested is where the words go, not what
the model says.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("presidio_analyzer")

from assistant import Assistant  # noqa: E402
from assistant.tools.calls import ToolCall  # noqa: E402
from assistant.tools.events import AssistantTurn, ToolCallEvent  # noqa: E402
from plugins.medical import tool as medical  # noqa: E402
from plugins.medical.report import DISCLAIMER, to_fhir, validate_report  # noqa: E402
from training.data.phantoms import fake_identity, make_phantom, render_hu, write_dicom  # noqa: E402

STUDIES = 200


def text_of(assistant: Assistant, prompt) -> str:
    return assistant.tokenizer.decode([i for i in prompt.input_ids if i >= 0])   # media positions hold placeholder ids


class ScriptedCaller(Assistant):
    """The chat assistant, except that it always calls ``draft_medical_report`` on ``self.next_path``."""

    next_path = ""
    prompts: list[str] = []

    def stream_events(self, messages, tools=None, tool_choice="auto", **options):
        prompt = self.prepare(messages, 64, tools)
        self.prompts.append(text_of(self, prompt))
        if any(m.get("role") == "tool" for m in messages):   # after the result: a plain (empty) reply
            yield AssistantTurn({"role": "assistant", "content": ""}, "stop")
            return
        call = ToolCall("draft_medical_report", {"path": self.next_path})
        yield ToolCallEvent(call)
        yield AssistantTurn({"role": "assistant", "content": "", "tool_calls": [call.to_openai()]}, "tool_calls", calls=[call])


def secrets(identity: dict[str, str]) -> set[str]:
    """Every identifying string written into a study or a message, and their parts."""
    values = {identity[key] for key in ("name", "patient_id", "birth_date", "birth_text", "accession", "phone", "institution", "address")}
    values |= set(identity["name"].split()) | set(identity["physician"].split("^")) | {identity["address"].split(",")[0]}
    return {value for value in values if len(value) >= 5}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    folder = tmp_path_factory.mktemp("scans")
    identities = []
    for index in range(STUDIES):
        rng = random.Random(f"phi-test/{index}")
        identity = fake_identity(rng, 90000 + index)
        write_dicom(folder / f"study_{index:03d}.dcm", render_hu(make_phantom(rng), index), identity, index, rng)
        identities.append(identity)
    return folder, identities


@pytest.fixture(scope="module")
def tiny_adapter(make_config, tmp_path_factory) -> str:
    config = make_config()
    config.tools.max_string_chars, config.tools.max_array_items = 10, 2   # a random model's JSON ends quickly
    path = tmp_path_factory.mktemp("adapter") / "tiny_domain"
    Assistant.from_config(config).save_pretrained(path)
    return str(path)


def run_all(studies, tiny_adapter, make_config, monkeypatch, caplog, out: Path) -> list[str]:
    """Run the plugin on every study through the tool loop; return every text that came out of it."""
    folder, identities = studies
    monkeypatch.setenv(medical.FOLDER_VARIABLE, str(folder))
    monkeypatch.setenv(medical.ADAPTER_VARIABLE, tiny_adapter)
    medical.domain_assistant.cache_clear()
    domain_prompts: list[str] = []
    prepare = Assistant.prepare

    def recording(self, messages, *args, **kwargs):
        prompt = prepare(self, messages, *args, **kwargs)
        if not isinstance(self, ScriptedCaller):
            domain_prompts.append(text_of(self, prompt))
        return prompt

    monkeypatch.setattr(Assistant, "prepare", recording)
    config = make_config()
    config.llm.max_context_tokens = 4096   # the plugin's schema and result fit in the tiny LLM's prompt
    chat = ScriptedCaller.from_config(config)
    chat.prompts = []
    texts = []
    caplog.set_level(logging.DEBUG)
    for index, identity in enumerate(identities):
        chat.next_path = f"study_{index:03d}.dcm"
        message = "Please draft the report."
        if index % 3 == 0:   # PHI typed by the user in some turns
            message = (f"Draft the report for {identity['name']}, born {identity['birth_text']}, record {identity['patient_id']}, "
                       f"phone {identity['phone']}, living at {identity['address']}.")
        events = list(chat.run_stream([{"role": "user", "content": message}], tools=[medical.draft_medical_report], max_steps=1))
        results = [e.message for e in events if hasattr(e, "message") and e.message.get("role") == "tool"]
        assert results, f"study {index}: the plugin did not run"
        body = results[0]["content"][0]["text"]
        assert DISCLAIMER in body, f"study {index}: no disclaimer in {body[:200]!r}"
        texts.append(body)
        report = medical.draft(medical.load(folder / chat.next_path))
        (out / f"report_{index:03d}.fhir.json").write_text(json.dumps(to_fhir(validate_report(report.report.model_dump()))))
    texts += chat.prompts + domain_prompts + [record.getMessage() for record in caplog.records]
    texts += [path.read_text(errors="replace") for path in out.rglob("*") if path.is_file()]
    return texts


def leaks(texts: list[str], identities: list[dict[str, str]]) -> list[str]:
    haystack = "\n".join(texts).lower()
    return sorted({value for identity in identities for value in secrets(identity) if value.lower() in haystack})


def test_phi_never_leaks_into_prompts_logs_results_reports_or_files(studies, tiny_adapter, make_config, monkeypatch, caplog, tmp_path):
    texts = run_all(studies, tiny_adapter, make_config, monkeypatch, caplog, tmp_path)
    assert len(texts) > 3 * STUDIES
    found = leaks(texts, studies[1])
    assert not found, f"{len(found)} PHI values leaked, e.g. {found[:5]}"


def test_without_deidentification_the_same_search_finds_the_phi(studies, tiny_adapter, make_config, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(medical, "DEIDENTIFY", False)
    texts = run_all(studies, tiny_adapter, make_config, monkeypatch, caplog, tmp_path)
    found = leaks(texts, studies[1])
    assert len(found) > STUDIES, f"only {len(found)} values found with de-identification off: the search would miss leaks"
