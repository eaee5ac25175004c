"""The transcribe_audio plugin on the packaged Whisper base, with espeak-ng speech."""

from __future__ import annotations

import pytest
from langchain_core.tools import ToolException

from assistant.audio import SAMPLE_RATE, clip_from_samples
from assistant.config import MediaConfig
from assistant.tools.context import ToolContext
from plugins.transcription import transcribe_audio

pytestmark = pytest.mark.integration  # loads the packaged Whisper base (about 1 s)


def _context(speak, *texts: str) -> ToolContext:
    return ToolContext(audio=[clip_from_samples(speak(text), text, MediaConfig()) for text in texts])


def test_an_espeak_sentence_is_transcribed_with_language_and_timestamps(speak):
    context = _context(speak, "The blue car is parked outside the station.", "How many circles are there?")
    latest = transcribe_audio.invoke({"context": context})
    assert latest.startswith("Language: en") and "circles" in latest.lower()
    first = transcribe_audio.invoke({"audio": 0, "language": "en", "timestamps": True, "context": context})
    lines = first.splitlines()
    assert lines[0].startswith("Language: en (100%)")
    assert lines[1].startswith("[  0.00 -") and "parked outside the station" in lines[1].lower()


def test_bad_requests_come_back_as_tool_errors(speak):
    context = _context(speak, "Hello there.")
    for arguments, expected in [({"audio": 3}, "does not exist"), ({"language": "klingon"}, "unknown language")]:
        with pytest.raises(ToolException, match=expected):
            transcribe_audio.invoke({**arguments, "context": context})
    with pytest.raises(ToolException, match="no audio clip"):
        transcribe_audio.invoke({"context": ToolContext()})


def test_the_tool_loop_hands_the_whole_clip_to_the_plugin(speak, make_config):
    from assistant import Assistant, ConnectorConfig, EncoderConfig, ModalityConfig
    from assistant.tools.loop import _media

    config = make_config()
    config.modalities["audio"] = ModalityConfig(EncoderConfig(kind="whisper"), ConnectorConfig(kind="stack"))
    config.media.audio_token_budget = 8  # the model sees 1.3 s of the clip; the plugin hears all of it
    bot = Assistant.from_config(config)
    samples = speak("Please turn on the kitchen lights and close the door.")
    messages = [{"role": "user", "content": [{"type": "audio", "audio": (SAMPLE_RATE, samples)}, {"type": "text", "text": "Transcribe."}]}]
    assert bot.parse(messages)[0].media[0].frames[0].seconds < 1.4
    pictures, clips = _media(bot, messages)
    assert pictures == [] and len(clips[0].samples) == len(samples)
    text = transcribe_audio.invoke({"context": ToolContext(audio=clips, assistant=bot)}).lower()
    assert "kitchen lights" in text and "door" in text
    from plugins.transcription import whisper_model

    assert whisper_model(bot) is bot.model.encoders["audio"].whisper  # the encoder's loaded model, not a second copy


def test_the_packaged_encoder_keeps_the_frames_of_real_audio_padded_or_not(speak):
    import torch

    from assistant.encoders import build_encoder
    from assistant.config import EncoderConfig
    from assistant.encoders.whisper import frames_for

    encoder = build_encoder(EncoderConfig(kind="whisper"))
    clip = clip_from_samples(speak("How many circles are there?"), "q", MediaConfig())
    real = encoder.encode_frame(clip)
    encoder.pad_to_window = True
    padded = encoder.encode_frame(clip)
    assert real.shape == padded.shape == (frames_for(len(clip.samples)), 512)
    similarity = torch.nn.functional.cosine_similarity(real, padded, dim=-1).mean()
    assert 0.6 < similarity < 0.999  # the same speech, seen with and without 30 s of padding after it
