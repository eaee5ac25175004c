"""The server's ``response_format``: a JSON-schema reply decoded under the schema (bad formats: test_server)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from test_server import MODEL, bot, client, url  # noqa: F401 - the tiny assistant served in a thread, and its client

ANSWER = {"type": "object", "additionalProperties": False, "required": ["answer", "count"], "properties": {
    "answer": {"type": "string", "enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 0, "maximum": 9}}}


def test_a_json_schema_response_format_decodes_a_reply_that_validates(bot, client):
    request = dict(model=MODEL, messages=[{"role": "user", "content": "Is there a circle? How many?"}], max_tokens=60,
                   response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}})
    reply = client.chat.completions.create(**request).choices[0]
    assert reply.finish_reason == "stop"
    jsonschema.validate(json.loads(reply.message.content), ANSWER)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(stream=True, **request)
                       if chunk.choices)
    assert streamed == reply.message.content
    free = client.chat.completions.create(model=MODEL, messages=request["messages"], max_tokens=60).choices[0].message.content
    with pytest.raises(ValueError):  # without the format the random model writes no JSON: the test can fail
        jsonschema.validate(json.loads(free), ANSWER)
