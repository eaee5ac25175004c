"""Media sources, content keys and video frame sampling."""

import base64

import numpy as np
import pytest
from PIL import Image

from assistant import AssistantError
from assistant.config import MediaConfig
from assistant.media import load_frame, load_image, load_video, sample_indices

LIMITS = MediaConfig()


def test_same_content_same_key_whatever_the_source(image_files):
    data = open(image_files[0], "rb").read()
    from_path = load_frame(image_files[0], LIMITS)
    from_bytes = load_frame(data, LIMITS)
    from_url = load_frame("data:image/png;base64," + base64.b64encode(data).decode(), LIMITS)
    assert from_path.key == from_bytes.key == from_url.key
    assert from_path.key != load_frame(image_files[1], LIMITS).key
    pil = Image.open(image_files[0])
    assert load_frame(pil, LIMITS).key == load_frame(np.asarray(pil.convert("RGB")), LIMITS).key


def test_transparent_images_become_rgb_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    frame = load_frame(image, LIMITS)
    assert frame.image.mode == "RGB" and frame.image.getpixel((0, 0)) == (255, 255, 255)


def test_sample_indices_spread_evenly():
    assert sample_indices(100, 4) == [12, 37, 62, 87]
    assert sample_indices(3, 8) == [0, 1, 2]


def test_video_from_frame_list_samples_and_timestamps(image_files):
    frames = [image_files[i % 4] for i in range(10)]
    video = load_video(frames, LIMITS, num_frames=3, fps=2.0)
    assert video.modality == "video" and len(video.frames) == 3
    assert video.timestamps == (0.5, 2.5, 4.0)  # segment centres: indices 1, 5, 8 at 2 fps


def test_animated_gif_is_a_video(tmp_path):
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    images = [Image.new("RGB", (16, 16), colour) for colour in colours]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=200)
    video = load_video(str(tmp_path / "clip.gif"), LIMITS, num_frames=3)
    assert len(video.frames) == 3
    assert [round(t, 1) for t in video.timestamps] == [0.2, 0.6, 1.0]
    assert video.frames[0].image.getpixel((0, 0))[1] > 100  # frame 1 is green


def test_mp4_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), index * 12, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    video = load_video(str(path), LIMITS, num_frames=4)
    assert len(video.frames) == 4
    assert list(video.timestamps) == sorted(video.timestamps) and video.timestamps[-1] > 1.0
    brightness = [np.asarray(f.image).mean() for f in video.frames]
    assert brightness == sorted(brightness)  # frames come in time order


def test_corrupt_video_is_a_named_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(AssistantError, match="bad.mp4"):
        load_video(str(tmp_path / "bad.mp4"), LIMITS, num_frames=4)


def test_video_in_a_conversation_respects_the_token_budget(make_config, image_files):
    from assistant import Assistant

    config = make_config()
    config.media.video_token_budget = 50  # 16 tokens per frame -> at most 3 frames
    bot = Assistant.from_config(config)
    assert bot.frames_per_video == 3
    frames = [image_files[k] for k in (0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0)]  # sampled: indices 2, 6, 10
    messages = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What happens?"}]}]
    prompt = bot.prepare(messages, max_new_tokens=8)
    assert len(prompt.spans) == 3
    text = bot.tokenizer.decode([i for i in prompt.input_ids if i >= 0])
    assert "[2.0s]" in text and "[6.0s]" in text and "[10.0s]" in text  # temporal signal in the prompt
    assert bot.chat(messages, max_new_tokens=4) is not None
    assert bot.stats.encoder_calls == 2  # sampled frames 2 and 10 are the same picture, encoded once


def test_load_image_result_is_single_frame(image_files):
    media = load_image(image_files[0], LIMITS)
    assert media.modality == "image" and len(media.frames) == 1
