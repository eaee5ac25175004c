"""Message pre-processing before prompts are built."""

import base64

import pytest

from assistant.chat_history import media_part, to_messages
from assistant.errors import AssistantError
from assistant.messages import attached_files
from assistant.openai_messages import from_openai_messages


def test_text_filters_reach_user_text_before_the_prompt_is_built(fresh_assistant):
    """A filter (e.g. a PHI redactor) sees every user text part; the prompt holds only what it returned."""
    fresh_assistant.text_filters.append(lambda text: text.replace("Quorvath", "[NAME]"))
    messages = [{"role": "system", "content": "Quorvath stays in a system turn"},
                {"role": "user", "content": "my name is Quorvath"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "Quorvath again"}]}]
    prompt = fresh_assistant.prepare(messages)
    text = fresh_assistant.tokenizer.decode(prompt.input_ids)
    assert text.count("Quorvath") == 1 and text.count("[NAME]") == 2
    assert messages[1]["content"] == "my name is Quorvath"  # the caller's list is not changed


def test_an_attached_file_reaches_the_model_as_a_marker_without_its_name(fresh_assistant):
    """A file part is for tools: the prompt names its place and extension, never its (often identifying) name."""
    messages = [{"role": "user", "content": [{"type": "file", "file": "/uploads/Quorvath_Kim_scan.DCM"},
                                             {"type": "file", "file": b"\x00" * 200},
                                             {"type": "text", "text": "Draft a report."}]}]
    text = fresh_assistant.tokenizer.decode(fresh_assistant.prepare(messages).input_ids)
    assert "[attached file 1 (.dcm)]" in text and "[attached file 2 (no extension)]" in text
    assert "Quorvath" not in text and "uploads" not in text
    assert attached_files(messages) == ["/uploads/Quorvath_Kim_scan.DCM", b"\x00" * 200]


@pytest.mark.parametrize("message, problem", [
    ({"role": "assistant", "content": [{"type": "file", "file": "a.dcm"}]}, "only allowed in user turns"),
    ({"role": "user", "content": [{"type": "file", "file": ""}]}, "needs 'file'"),
    ({"role": "user", "content": [{"type": "file", "file": 3}]}, "needs 'file'"),
    ({"role": "user", "content": [{"type": "file"}]}, "needs 'file'"),
])
def test_bad_file_parts_are_named(fresh_assistant, message, problem):
    conversation = [message] if message["role"] == "user" else [{"role": "user", "content": "hi"}, message, {"role": "user", "content": "?"}]
    with pytest.raises(AssistantError, match=problem):
        fresh_assistant.prepare(conversation)


def test_openai_file_parts_arrive_as_bytes_never_as_paths():
    encoded = base64.b64encode(b"DICM-bytes").decode()
    for data in (encoded, f"data:application/dicom;base64,{encoded}"):
        [message] = from_openai_messages([{"role": "user", "content": [{"type": "file", "file": {"file_data": data, "filename": "x.dcm"}}]}])
        assert message["content"] == [{"type": "file", "file": b"DICM-bytes"}]
    for file, problem in (({"file_id": "file-123"}, "keeps no uploaded files"), ({"file_data": "not base64!"}, "not valid base64"),
                          ("/etc/passwd", "needs 'file'"), ({"file_data": "data:text/plain,abc"}, "must be base64")):
        with pytest.raises(AssistantError, match=problem):
            from_openai_messages([{"role": "user", "content": [{"type": "file", "file": file}]}])


def test_uploads_a_plugin_reads_become_file_parts_and_others_are_refused(tmp_path):
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(b"\x00" * 10)
    assert media_part(str(scan), 1.0, (".dcm",)) == {"type": "file", "file": str(scan)}
    with pytest.raises(AssistantError, match="unsupported file type"):
        media_part(str(scan), 1.0)
    [message] = to_messages([], {"text": "report", "files": [str(scan)]}, file_types=(".dcm",))
    assert message["content"][0] == {"type": "file", "file": str(scan)}

