"""Config validation and JSON round trip."""

import json

import pytest

from assistant import AssistantConfig, AssistantError, ConnectorConfig, LLMConfig, MediaConfig, ModalityConfig


def test_round_trip_through_json(tmp_path):
    config = AssistantConfig(
        llm=LLMConfig(model="some/model", quantize="4bit"),
        modalities={"image": ModalityConfig(connector=ConnectorConfig(kind="resampler", num_latents=16))},
        system_prompt="Be brief.",
    )
    config.llm.lora.r = 8
    config.save(tmp_path / "c.json")
    loaded = AssistantConfig.load(tmp_path / "c.json")
    assert loaded == config
    assert loaded.modalities["image"].connector.num_latents == 16
    assert loaded.llm.lora.r == 8


@pytest.mark.parametrize(
    "build",
    [
        lambda: LLMConfig(dtype="float8"),
        lambda: LLMConfig(quantize="3bit"),
        lambda: ConnectorConfig(num_latents=0),
        lambda: MediaConfig(video_max_frames=0),
        lambda: AssistantConfig(modalities={"smell": ModalityConfig()}),
    ],
)
def test_invalid_values_are_rejected(build):
    with pytest.raises(AssistantError):
        build()


def test_unknown_field_in_json_names_it(tmp_path):
    data = AssistantConfig().to_dict()
    data["llm"]["temprature"] = 0.5
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(AssistantError, match="temprature"):
        AssistantConfig.load(tmp_path / "c.json")


def test_unreadable_config_file(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(AssistantError, match="cannot read assistant config"):
        AssistantConfig.load(tmp_path / "c.json")
