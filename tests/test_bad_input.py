"""Every kind of bad input raises AssistantError naming the problem, and the assistant keeps working."""

import io

import pytest
from PIL import Image

from assistant import AssistantError
from assistant.config import MediaConfig


def image_message(source, text="What is in this picture?"):
    return [{"role": "user", "content": [{"type": "image", "image": source}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, format="PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "disguised.png").write_text("#!/bin/sh\necho this is not an image\n")
    (folder / "empty.png").write_bytes(b"")
    # 12000 x 12000 = 144 M pixels: past Pillow's 89 M-pixel decompression-bomb limit, tiny on disk.
    Image.new("1", (12000, 12000)).save(folder / "bomb.png")
    (folder / "folder.png").mkdir()
    return folder


CASES = {
    "missing file": (lambda f: image_message(str(f / "nope.png")), "not found"),
    "truncated": (lambda f: image_message(str(f / "truncated.png")), "corrupt or truncated"),
    "disguised": (lambda f: image_message(str(f / "disguised.png")), "not a readable image"),
    "empty file": (lambda f: image_message(str(f / "empty.png")), "is empty"),
    "decompression bomb": (lambda f: image_message(str(f / "bomb.png")), "decompression.bomb"),
    "a folder": (lambda f: image_message(str(f / "folder.png")), "not a file"),
    "remote url": (lambda f: image_message("https://example.com/cat.png"), "remote URLs are not fetched"),
    "bad data url": (lambda f: image_message("data:image/png;base64,@@@"), "invalid base64"),
    "unsupported source": (lambda f: image_message(12345), "unsupported media source"),
    "bad array": (lambda f: image_message(__import__("numpy").zeros((4, 4, 3), dtype="float32")), "uint8"),
    "no messages": (lambda f: [], "non-empty list"),
    "not a list": (lambda f: "hello", "non-empty list"),
    "empty message": (lambda f: [{"role": "user", "content": ""}], "empty"),
    "empty parts": (lambda f: [{"role": "user", "content": []}], "empty"),
    "unknown role": (lambda f: [{"role": "wizard", "content": "hi"}], "role 'wizard'"),
    "unknown content type": (lambda f: [{"role": "user", "content": [{"type": "hologram", "hologram": 1}]}], "unknown content type 'hologram'"),
    "part not a dict": (lambda f: [{"role": "user", "content": ["hi"]}], "unknown content type"),
    "text not a string": (lambda f: [{"role": "user", "content": [{"type": "text", "text": 5}]}], "must be a string"),
    "image without field": (lambda f: [{"role": "user", "content": [{"type": "image"}]}], "no 'image' field"),
    "image in assistant turn": (
        lambda f: [{"role": "assistant", "content": [{"type": "image", "image": "x.png"}]}, {"role": "user", "content": "hi"}],
        "only allowed in user or tool turns",
    ),
    "audio without encoder": (lambda f: [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}], "no audio encoder"),
    "last turn from assistant": (lambda f: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message"),
    "reserved characters": (lambda f: [{"role": "user", "content": "a\ue000b"}], "reserved characters"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_named_error_and_changes_nothing(fresh_assistant, bad_files, image_files, case):
    build, expected = CASES[case]
    good = image_message(image_files[0])
    reply = fresh_assistant.chat(good, max_new_tokens=6)
    stats_before = vars(fresh_assistant.stats).copy()
    cached_before = fresh_assistant._engine.pool.cached_tokens

    with pytest.raises(AssistantError, match=expected):
        fresh_assistant.chat(build(bad_files), max_new_tokens=6)

    assert vars(fresh_assistant.stats) == stats_before  # nothing half-applied
    assert fresh_assistant._engine.pool.cached_tokens == cached_before
    assert fresh_assistant.chat(good, max_new_tokens=6) == reply  # and it keeps serving


def test_too_many_media_items(fresh_assistant, image_files):
    limit = fresh_assistant.config.media.max_items_per_request
    content = [{"type": "image", "image": image_files[0]}] * (limit + 1) + [{"type": "text", "text": "hi"}]
    with pytest.raises(AssistantError, match=f"limit of {limit}"):
        fresh_assistant.chat([{"role": "user", "content": content}])


def test_oversized_file_is_refused_before_reading(fresh_assistant, image_files, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (2 * 1024 * 1024))
    fresh_assistant.config.media.max_file_mb = 1
    try:
        with pytest.raises(AssistantError, match="over the 1 MB limit"):
            fresh_assistant.chat(image_message(str(big)))
    finally:
        fresh_assistant.config.media.max_file_mb = MediaConfig().max_file_mb


def test_configured_pixel_limit_is_honoured(image_files):
    from assistant.media import load_image

    with pytest.raises(AssistantError, match="over the limit of 100"):
        load_image(image_files[0], MediaConfig(max_image_pixels=100))


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_generation_options(fresh_assistant, options, expected):
    with pytest.raises(AssistantError, match=expected):
        fresh_assistant.chat([{"role": "user", "content": "hi"}], **options)
    assert fresh_assistant.chat([{"role": "user", "content": "hi"}], max_new_tokens=3) is not None
