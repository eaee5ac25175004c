"""Audio: decoding and its limits, the Whisper encoders and their windows, the stack connector, the
placeholder contract for clips of any length, the per-turn budget, encoder caching over turns, and
CTC alignment. Unit tests use a tiny random Whisper saved to a folder; nothing is downloaded."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import wave

import numpy as np
import pytest
import torch

from assistant import Assistant, AssistantError, ConnectorConfig, EncoderConfig, ModalityConfig
from assistant.audio import SAMPLE_RATE, clip_from_samples, load_audio
from assistant.config import MediaConfig
from assistant.encoders.whisper import WINDOW_FRAMES, frames_for

RATE = SAMPLE_RATE


def tone(seconds: float, frequency: float = 440.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def encode_with_pyav(path, codec: str, container: str, seconds: float = 1.0, rate: int = 44_100, video: bool = False) -> None:
    import av

    samples = tone(seconds, rate=rate)
    with av.open(str(path), "w", format=container) as output:
        if video:
            picture = output.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        stream = output.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame_size = stream.codec_context.frame_size or 1024
        whole = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        whole.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate, frame_size=frame_size)
        for frame in resampler.resample(whole) + resampler.resample(None):
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
        if video:
            for index in range(int(seconds * 10)):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), index * 20 % 255, np.uint8), format="rgb24")
                for packet in picture.encode(image):
                    output.mux(packet)
            for packet in picture.encode(None):
                output.mux(packet)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> str:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(2)
    config = WhisperConfig(
        vocab_size=120, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=1500,
        max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1,
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def audio_config(make_config, tiny_whisper):
    def factory(**media):
        config = make_config()
        config.modalities["audio"] = ModalityConfig(
            EncoderConfig(kind="hf_whisper", model=tiny_whisper), ConnectorConfig(kind="stack", stack=8)
        )
        config.media = dataclasses.replace(config.media, **media)
        return config

    return factory


@pytest.fixture(scope="session")
def audio_bot(audio_config) -> Assistant:
    return Assistant.from_config(audio_config())


def audio_message(source, text: str = "What is it?", image=None) -> list[dict]:
    parts = ([{"type": "image", "image": image}] if image else []) + [{"type": "audio", "audio": source}]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


# ------------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("codec,container,suffix", [
    ("pcm_s16le", "wav", "wav"), ("mp3", "mp3", "mp3"), ("flac", "flac", "flac"), ("libopus", "ogg", "ogg"),
    ("aac", "ipod", "m4a"),
])
def test_every_container_decodes_to_16k_mono_at_the_right_pitch(tmp_path, codec, container, suffix):
    path = tmp_path / f"tone.{suffix}"
    rate = 48_000 if codec == "libopus" else 44_100
    encode_with_pyav(path, codec, container, seconds=1.0, rate=rate)
    clip = load_audio(str(path), MediaConfig()).frames[0]
    assert abs(clip.seconds - 1.0) < 0.1, clip.seconds
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * RATE / len(clip.samples) - 440) < 10


def test_a_video_soundtrack_is_read(tmp_path):
    path = tmp_path / "clip.mp4"
    encode_with_pyav(path, "aac", "mp4", seconds=1.0, video=True)
    assert abs(load_audio(str(path), MediaConfig()).frames[0].seconds - 1.0) < 0.1


def test_gradio_numpy_audio_and_the_same_sound_share_a_key(tmp_path):
    samples = tone(1.0, rate=22_050, channels=2)
    from_array = load_audio((22_050, (samples * 32767).astype(np.int16)), MediaConfig()).frames[0]
    assert abs(from_array.seconds - 1.0) < 0.01 and from_array.samples.ndim == 1
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(tone(1.0)))
    other = tmp_path / "b.wav"
    other.write_bytes(wav_bytes(tone(1.0)))
    assert load_audio(str(path), MediaConfig()).frames[0].key == load_audio(str(other), MediaConfig()).frames[0].key


def _bad_inputs(tmp_path) -> dict[str, tuple[object, MediaConfig, str]]:
    from PIL import Image

    good = wav_bytes(tone(2.0))
    files = {
        "corrupt.wav": good[:44] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
        "truncated.wav": good[: len(good) // 3],
        "silent.wav": wav_bytes(np.zeros(RATE, np.float32)),
        "stereo.wav": wav_bytes(tone(1.0, channels=2)),
        "long.wav": wav_bytes(tone(3.0)),
        "short.wav": wav_bytes(tone(0.02)),
        "empty.wav": b"",
        "noise.bin": bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
    }
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(picture, "PNG")
    files["picture.wav"] = picture.getvalue()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    encode_with_pyav(tmp_path / "silent_film.mp4", "aac", "mp4", video=True)  # then strip the audio: video only
    import av

    with av.open(str(tmp_path / "silent_film.mp4")) as source, av.open(str(tmp_path / "video_only.mp4"), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    encode_with_pyav(tmp_path / "whole.flac", "flac", "flac", seconds=3.0)
    flac = bytearray((tmp_path / "whole.flac").read_bytes())
    flac[len(flac) // 4 :] = bytes(len(flac) - len(flac) // 4)  # three quarters of the frames zeroed
    (tmp_path / "damaged.flac").write_bytes(bytes(flac))
    base = MediaConfig()
    return {
        "corrupt": (tmp_path / "corrupt.wav", base, "corrupt or truncated"),
        "truncated": (tmp_path / "truncated.wav", base, "corrupt or truncated"),
        "corrupt flac": (tmp_path / "damaged.flac", base, "corrupt or truncated"),
        "silent": (tmp_path / "silent.wav", base, "silent"),
        "disguised": (tmp_path / "picture.wav", base, "not an audio file"),
        "garbage": (tmp_path / "noise.bin", base, "not a readable audio file"),
        "channels": (tmp_path / "stereo.wav", dataclasses.replace(base, audio_max_channels=1), "channels"),
        "duration": (tmp_path / "long.wav", dataclasses.replace(base, audio_max_seconds=2.0), "limit"),
        "size": (tmp_path / "long.wav", dataclasses.replace(base, max_file_mb=0.01), "MB"),
        "too short": (tmp_path / "short.wav", base, "shorter"),
        "empty": (tmp_path / "empty.wav", base, "empty"),
        "no audio stream": (tmp_path / "video_only.mp4", base, "no audio stream"),
        "missing": (tmp_path / "absent.wav", base, "not found"),
    }


def test_every_bad_audio_input_gets_an_error_naming_the_file(tmp_path):
    for case, (path, limits, expected) in _bad_inputs(tmp_path).items():
        with pytest.raises(AssistantError) as caught:
            load_audio(str(path), limits)
        message = str(caught.value)
        assert expected in message, (case, message)
        assert path.name in message or case == "empty" and "empty" in message, (case, message)


def test_bad_arrays_are_refused():
    limits = MediaConfig()
    for source, expected in [
        ((16_000, np.zeros((10, 10, 2))), "shape"), ((5, tone(1.0)), "sample rate"), (tone(1.0), "sample_rate, array"),
        ((16_000, np.array(["a"] * 4000)), "integers or floats"), ((16_000, np.full(16_000, np.nan, np.float32)), "finite"),
    ]:
        with pytest.raises(AssistantError, match=expected):
            load_audio(source, limits)


def test_a_bad_clip_leaves_the_assistant_serving(audio_bot, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEfmt garbage")
    with pytest.raises(AssistantError, match="bad.wav"):
        audio_bot.chat(audio_message(str(tmp_path / "bad.wav")), max_new_tokens=2)
    assert isinstance(audio_bot.chat(audio_message((RATE, tone(1.0))), max_new_tokens=2), str)


# ------------------------------------------------------------------------------------ encoder and windows


def test_a_tiny_random_whisper_loads_by_path_and_is_frozen(audio_bot, tiny_whisper):
    encoder = audio_bot.model.encoders["audio"]
    assert encoder.modality == "audio" and encoder.hidden_size == 16 and tiny_whisper in encoder.description
    assert not any(p.requires_grad for p in encoder.parameters())
    frames = encoder.encode_frame(clip_from_samples(tone(1.0), "t", MediaConfig()))
    assert frames.shape == (50, 16) and frames.dtype == torch.float32


def test_a_non_whisper_checkpoint_is_refused(tiny_paths):
    from assistant import AssistantConfig, LLMConfig

    audio = ModalityConfig(EncoderConfig(kind="hf_whisper", model=tiny_paths["clip"]), ConnectorConfig(kind="stack"))
    with pytest.raises(AssistantError, match="not Whisper"):
        Assistant.from_config(AssistantConfig(llm=LLMConfig(model=tiny_paths["llm"]), modalities={"audio": audio}))


def test_windows_are_padded_to_30_s_and_only_real_frames_kept(audio_bot):
    """A 31-s clip is window 1 (1500 frames) + the first 50 frames of window 2 encoded padded to 30 s."""
    encoder = audio_bot.model.encoders["audio"]
    samples = tone(31.0) * np.linspace(0.5, 1.0, 31 * RATE, dtype=np.float32)
    frames = encoder.encode_frame(clip_from_samples(samples, "t", MediaConfig()))
    assert frames.shape[0] == WINDOW_FRAMES + 50 == frames_for(len(samples))
    second = samples[30 * RATE :]
    padded = encoder.encode_mel(encoder.window_mel(second))
    assert padded.shape[0] == WINDOW_FRAMES  # the encoder saw a whole 30-s window...
    torch.testing.assert_close(frames[WINDOW_FRAMES:], padded[:50])  # ...and the frames of real audio are kept
    first = encoder.encode_mel(encoder.window_mel(samples[: 30 * RATE]))
    torch.testing.assert_close(frames[:WINDOW_FRAMES], first)


@pytest.mark.parametrize("seconds", [1, 29, 31, 95])
def test_placeholder_count_equals_the_audio_tokens(audio_bot, seconds):
    clip = clip_from_samples(tone(float(seconds)), "t", MediaConfig())
    expected = math.ceil(math.ceil(seconds * RATE / 320) / 8)
    prompt = audio_bot.prompt_builder.build(audio_bot.parse(audio_message(clip)))
    placeholders = prompt.input_ids.count(-300)
    tokens = audio_bot._connected("audio", clip)
    assert placeholders == expected == tokens.shape[0]
    assert [span.length for span in prompt.spans] == [expected]
    if seconds <= 31:  # fits the tiny LLM's 512 positions: the placeholders are filled
        embedded = audio_bot._embed_suffix(prompt, 0)
        assert embedded.shape[1] == len(prompt.input_ids)


def test_audio_over_the_turn_budget_is_cut_and_logged(audio_config, caplog):
    bot = Assistant.from_config(audio_config(audio_token_budget=20))
    caplog.set_level(logging.WARNING, logger="assistant.audio")
    prompt = bot.prepare(audio_message((RATE, tone(10.0))) + [], max_new_tokens=8)
    assert prompt.input_ids.count(-300) == 20
    assert any("cut from 10.0 s" in record.getMessage() for record in caplog.records)
    two = [{"role": "user", "content": [{"type": "audio", "audio": (RATE, tone(2.0))}, {"type": "audio", "audio": (RATE, tone(3.0, 660))}]}]
    prompt = bot.prepare(two, max_new_tokens=8)
    assert [span.length for span in prompt.spans] == [13, 7]  # the first clip whole, the second cut


def test_picture_and_audio_share_a_turn_in_order(audio_bot, image_files):
    prompt = audio_bot.prepare(audio_message((RATE, tone(1.0)), image=image_files[0]))
    assert [span.modality for span in prompt.spans] == ["image", "audio"]
    assert prompt.input_ids.count(-300) == 7 and prompt.input_ids.count(-200) == audio_bot.model.tokens_per_frame()["image"]
    assert isinstance(audio_bot.chat(audio_message((RATE, tone(1.0)), image=image_files[0]), max_new_tokens=3), str)


def test_each_clip_is_encoded_once_over_three_turns(audio_config, image_files):
    bot = Assistant.from_config(audio_config())
    history = audio_message((RATE, tone(1.5)), "Listen.")
    history.append({"role": "assistant", "content": bot.chat(history, max_new_tokens=4)})
    history.append({"role": "user", "content": [{"type": "image", "image": image_files[1]}, {"type": "text", "text": "And this?"}]})
    history.append({"role": "assistant", "content": bot.chat(history, max_new_tokens=4)})
    earlier = len(bot.prepare(history[:3]).input_ids)
    history.append({"role": "user", "content": "Both again?"})
    reused = bot.stats.reused_tokens
    bot.chat(history, max_new_tokens=4)
    assert bot.stats.encoder_calls == 2  # one clip, one picture, whatever the number of turns
    assert bot.stats.reused_tokens - reused >= earlier  # the third turn continued from the second's cache


def test_a_spoken_question_row_trains_both_modalities(audio_config, image_files, tmp_path):
    from training.data.examples import encode_row
    from training.data.rows import parse_row

    bot = Assistant.from_config(audio_config())
    (tmp_path / "q.wav").write_bytes(wav_bytes(tone(1.0)))
    (tmp_path / "p.png").write_bytes(open(image_files[0], "rb").read())
    record = {"messages": [
        {"role": "user", "content": [{"type": "image", "image": "p.png"}, {"type": "audio", "audio": "q.wav", "transcript": "how many"}]},
        {"role": "assistant", "content": "two"},
    ]}
    row = parse_row(record, "r", tmp_path)
    example = encode_row(bot, bot.prompt_builder, row)
    assert len(example.frames) == 1 and len(example.clips) == 1 and example.transcripts == ["how many"]
    assert example.input_ids.count(-300) == 7


# ------------------------------------------------------------------------------------ connector and alignment


def test_stack_connector_counts_tokens_by_length():
    from adapters import build_connector

    connector = build_connector("stack", 16, 24, 1500, stack=8)
    for frames, tokens in [(1, 1), (8, 1), (9, 2), (50, 7), (1550, 194)]:
        assert connector(torch.randn(2, frames, 16)).shape == (2, tokens, 24) == (2, connector.num_output_tokens(frames), 24)


def test_ctc_alignment_prefers_tokens_that_spell_the_transcript():
    from training.audio_alignment import ctc_alignment_loss

    torch.manual_seed(0)
    embeddings = torch.randn(50, 8)
    blank, target = 0, [5, 7, 9]
    spelled = embeddings[[blank, 5, blank, 7, 7, blank, 9, blank]] * 4
    shuffled = embeddings[[blank, 9, blank, 5, 5, blank, 7, blank]] * 4
    good = ctc_alignment_loss([spelled], [target], embeddings, blank, 0, 1.0)
    bad = ctc_alignment_loss([shuffled], [target], embeddings, blank, 0, 1.0)
    assert good < bad and good < 1.0
    assert ctc_alignment_loss([spelled[:2]], [target], embeddings, blank, 0, 1.0) is None  # too few tokens for the words


def test_audio_alignment_trains_only_the_audio_connector(audio_config, tmp_path):
    import json

    from training.config import load_train_config
    from training.trainer import Trainer

    rows = []
    for index, (frequency, words) in enumerate([(300, "low"), (900, "high"), (500, "low"), (1200, "high")]):
        (tmp_path / f"{index}.wav").write_bytes(wav_bytes(tone(1.0, frequency)))
        rows.append({"id": str(index), "messages": [
            {"role": "user", "content": [{"type": "audio", "audio": f"{index}.wav", "transcript": words}, {"type": "text", "text": "Which?"}]},
            {"role": "assistant", "content": words},
        ]})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = Assistant.from_config(audio_config())
    base.save_pretrained(tmp_path / "base")
    config = load_train_config([
        "--stage", "align", "--base", str(tmp_path / "base"), "--output-dir", str(tmp_path / "run"),
        "--data.train-file", str(tmp_path / "rows.jsonl"), "--align.objective", "lexical", "--align.negatives", "0",
        "--optim.max-steps", "3", "--optim.batch-size", "4", "--optim.mixed-precision", "no",
        "--checkpoint.save-every", "0", "--eval.eval-every", "0", "--eval.metric", "none",
    ])
    trainer = Trainer(config)
    image_before = {k: v.clone() for k, v in trainer.model.connectors["image"].state_dict().items()}
    audio_before = {k: v.clone() for k, v in trainer.model.connectors["audio"].state_dict().items()}
    trainer.train()
    assert all(torch.equal(image_before[k], v) for k, v in trainer.model.connectors["image"].state_dict().items())
    assert any(not torch.equal(audio_before[k], v) for k, v in trainer.model.connectors["audio"].state_dict().items())
    assert all(not p.requires_grad for p in trainer.model.llm.parameters())
    reloaded = Assistant.from_pretrained(tmp_path / "run" / "adapter")
    assert "audio" in reloaded.supported_media


# ------------------------------------------------------------------------------------ agent API


def test_the_server_takes_input_audio_and_answers_as_the_python_api(audio_bot):
    import base64

    import httpx
    import openai

    from assistant.serving import create_app
    from assistant.serving.background import serve_in_thread

    encoded = base64.b64encode(wav_bytes(tone(1.5, 520))).decode()
    content = [{"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}, {"type": "text", "text": "What is it?"}]
    expected = audio_bot.chat(audio_message(f"data:audio/wav;base64,{encoded}"), max_new_tokens=6)
    with serve_in_thread(create_app(audio_bot)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="multimodal-assistant", messages=[{"role": "user", "content": content}], max_tokens=6)
        assert reply.choices[0].message.content == expected
        assert reply.usage.prompt_tokens > 10  # the clip's 10 tokens are in the prompt
        broken = base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10).decode()
        response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "multimodal-assistant", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": broken, "format": "wav"}}]}],
        })
        assert response.status_code == 400 and "audio" in response.json()["error"]["message"]
        assert client.chat.completions.create(model="multimodal-assistant", messages=[{"role": "user", "content": content}], max_tokens=6).choices[0].message.content == expected


def test_langchain_audio_blocks_reach_the_model(audio_bot):
    import base64

    from langchain_core.messages import HumanMessage

    from assistant.langchain_chat import ChatAssistant

    encoded = base64.b64encode(wav_bytes(tone(1.0, 700))).decode()
    expected = audio_bot.chat(audio_message(f"data:audio/wav;base64,{encoded}", "Which tone?"), max_new_tokens=6)
    chat = ChatAssistant(assistant=audio_bot, max_tokens=6)
    for block in ({"type": "audio", "base64": encoded, "mime_type": "audio/wav"},
                  {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}):
        reply = chat.invoke([HumanMessage(content=[block, {"type": "text", "text": "Which tone?"}])])
        assert reply.content == expected


# ------------------------------------------------------------------------------------ chat UI


def test_the_ui_records_and_uploads_audio_only_for_an_assistant_that_hears(audio_bot, tiny_assistant, tmp_path):
    import gradio as gr

    from launch_ui import ChatHandlers, build_app
    from tests.test_ui import run_turn

    def textbox(bot):
        app = build_app(bot, max_file_mb=2)
        return next(block for block in app.blocks.values() if isinstance(block, gr.MultimodalTextbox))

    hearing, deaf = textbox(audio_bot), textbox(tiny_assistant)
    assert "microphone" in hearing.sources and ".wav" in hearing.file_types and ".m4a" in hearing.file_types
    assert deaf.sources == ["upload"] and ".wav" not in deaf.file_types and ".png" in deaf.file_types
    recording = tmp_path / "recording.wav"
    recording.write_bytes(wav_bytes(tone(1.2, 600)))
    calls = audio_bot.stats.encoder_calls
    _, reply, history = run_turn(ChatHandlers(audio_bot), [], "What did you hear?", [str(recording)])
    assert isinstance(reply, str) and reply  # an answer, not an error message
    assert audio_bot.stats.encoder_calls == calls + 1  # the recording went through the audio encoder


def test_the_command_line_chat_takes_a_recording(audio_bot, tmp_path, capsys):
    from assistant.chat import main

    audio_bot.save_pretrained(tmp_path / "adapter")
    (tmp_path / "q.wav").write_bytes(wav_bytes(tone(1.0)))
    assert main(["--adapter", str(tmp_path / "adapter"), "--audio", str(tmp_path / "q.wav"), "--max-new-tokens", "3"]) == 0
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    assert main(["--adapter", str(tmp_path / "adapter"), "--audio", str(tmp_path / "bad.wav"), "Hi"]) == 1
    assert "bad.wav" in capsys.readouterr().out
