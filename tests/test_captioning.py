"""Captioning: the plugin, grounded objects from the connector's cells, and captioning a folder into rows
that load both as training rows and as image-head pairs, sharded or not. Tiny random models only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from assistant import Assistant
from assistant.captioning import AssistantCaptioner, Caption, GroundedObject
from assistant.config import MediaConfig
from assistant.tools import ToolContext, tool_spec
from assistant.tools.calls import ToolCall
from assistant.tools.events import ToolResult
from assistant.tools.runner import ToolRunner
from plugins.captioning import caption_folder, caption_image, describe, join_parts
from training.data.rows import load_rows
from training.image_head import file_pairs


@pytest.fixture(scope="module")
def grounded_bot(make_config) -> Assistant:
    """A tiny assistant whose mlp connector keeps SigLIP's 4x4 grid and picks 6 cells by objectness."""
    config = make_config(vision="siglip")
    connector = config.modalities["image"].connector
    connector.select_cells, connector.tokens_per_cell = 6, 2
    bot = Assistant.from_config(config)
    with torch.no_grad():  # untrained objectness: make every chosen cell count as an object
        bot.model.connectors["image"].objectness.bias.fill_(4.0)
    return bot


@pytest.fixture
def pictures(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, colour in [("a.png", "red"), ("b.png", "blue"), ("more/c.png", "green"), ("d.jpg", "yellow")]:
        Image.new("RGB", (48, 40), colour).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 8)
    (folder / "notes.txt").write_text("not a picture")
    return folder


def test_grounded_objects_are_cells_on_the_grid_with_words(grounded_bot):
    objects = AssistantCaptioner(grounded_bot).grounded_objects(Image.new("RGB", (40, 40), "red"))
    grid = grounded_bot.model.encoders["image"].grid
    assert grid == 4 and 1 <= len(objects) <= 6
    for obj in objects:
        assert obj.words and "background" not in obj.words.split() and 0.5 <= obj.score <= 1.0
        assert all(0.0 <= v <= 1.0 for v in obj.box) and obj.box[0] < obj.box[2] and obj.box[1] < obj.box[3]
        assert all(math.isclose(v * grid, round(v * grid), abs_tol=0.01) for v in obj.box)  # cell edges


def test_connectors_without_cells_ground_nothing(tiny_assistant):
    assert AssistantCaptioner(tiny_assistant).grounded_objects(Image.new("RGB", (40, 40), "red")) == []


def test_describe_lists_objects_with_boxes():
    text = describe(Caption("A red circle.", (GroundedObject("large red circle left", (0.0, 0.25, 0.25, 0.5), 0.9),)))
    assert text.splitlines()[0] == "A red circle." and text.splitlines()[-1] == "- large red circle left: [0.00, 0.25, 0.25, 0.50]"


def test_the_plugin_captions_a_picture_of_the_conversation(grounded_bot):
    assert "context" not in tool_spec(caption_image).parameters["properties"]
    context = ToolContext(images=[Image.new("RGB", (40, 40), "blue")], assistant=grounded_bot)
    runner = ToolRunner([tool_spec(caption_image)], MediaConfig(), context)
    [result] = [e for e in runner.run([ToolCall("caption_image", {"detail": "short"})]) if isinstance(e, ToolResult)]
    assert result.ok and result.message["content"][0]["text"]
    [missing] = [e for e in runner.run([ToolCall("caption_image", {"image": 3})]) if isinstance(e, ToolResult)]
    assert not missing.ok and "does not exist" in missing.message["content"][0]["text"]
    alone = ToolRunner([tool_spec(caption_image)], MediaConfig(), ToolContext(images=[Image.new("RGB", (4, 4))]))
    [refused] = [e for e in alone.run([ToolCall("caption_image", {})]) if isinstance(e, ToolResult)]
    assert not refused.ok and "needs the conversation's assistant" in refused.message["content"][0]["text"]


class ColourCaptioner:
    """A captioner double: names the picture's mean colour and grounds one object in its top-left cell."""

    name = "test-colour"

    def caption(self, image, detail="short"):
        red, green, blue = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
        word = max((red, "red"), (green, "green"), (blue, "blue"))[1] if abs(red - green) > 40 or blue > 100 else "yellow"
        return Caption(f"A plain {word} picture.", (GroundedObject(f"large {word} square", (0.0, 0.0, 0.25, 0.25), 0.9),))


def test_a_captioned_folder_loads_as_training_rows_and_as_image_head_pairs(pictures):
    out = pictures / "captions.jsonl"
    written, skipped = caption_folder(pictures, out, ColourCaptioner(), "detailed")
    assert written == 4 and [name for name, _ in skipped] == ["broken.png"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == ["a.png", "b.png", "d.jpg", "more/c.png"]
    assert rows[0]["caption"] == "A plain red picture." and rows[0]["regions"][0]["box"] == [0.0, 0.0, 0.25, 0.25]
    loaded, report = load_rows(out, data_root=pictures)
    assert len(loaded) == 4, report
    assert loaded[0].regions and loaded[0].regions[0].text == "large red square"
    pairs = file_pairs(out)
    assert pairs.captions == [row["caption"] for row in rows] and len(pairs.images) == 4


def test_sharded_captioning_joins_to_the_same_rows(grounded_bot, pictures, tmp_path):
    captioner = AssistantCaptioner(grounded_bot, max_new_tokens=8)
    single = tmp_path / "single.jsonl"
    caption_folder(pictures, single, captioner, "short")
    sharded = tmp_path / "sharded.jsonl"
    for index in range(2):
        caption_folder(pictures, sharded, captioner, "short", process_index=index, num_processes=2)
    assert join_parts(sharded, 2) == 4 and not list(tmp_path.glob("sharded.jsonl.part*"))
    rows = lambda path: sorted(json.loads(line)["image"] for line in path.read_text().splitlines())  # noqa: E731
    assert rows(single) == rows(sharded)
    texts = lambda path: {json.loads(line)["image"]: json.loads(line)["caption"] for line in path.read_text().splitlines()}  # noqa: E731
    assert texts(single) == texts(sharded)  # greedy captions do not depend on the sharding


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> str:
    """A tiny random BLIP captioner (the packaged MiniLM's BERT tokenizer, random weights), saved by path."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from assistant.embedders import packaged_minilm_folder

    folder = tmp_path_factory.mktemp("tiny_blip")
    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_minilm_folder()))
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=tokenizer.vocab_size,
                max_position_embeddings=64, bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    BlipForConditionalGeneration(BlipConfig(vision_config=vision, text_config=text, projection_dim=16)).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def test_a_tiny_random_hf_captioner_loads_by_path_and_captions_a_folder(tiny_blip, pictures, tmp_path):
    from assistant.captioning import HFCaptioner
    from assistant.errors import AssistantError

    captioner = HFCaptioner(tiny_blip, max_new_tokens=6)
    first = captioner.caption(Image.new("RGB", (40, 40), "red"))
    assert first.text and first.objects == () and captioner.caption(Image.new("RGB", (40, 40), "red")) == first  # greedy
    out = tmp_path / "rows.jsonl"
    written, _ = caption_folder(pictures, out, captioner, "short")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == 4 and {row["captioner"] for row in rows} == {f"hf:{tiny_blip}"} and all("regions" not in row for row in rows)
    with pytest.raises(AssistantError, match="cannot load the image-to-text model"):
        HFCaptioner(str(tmp_path / "nothing"))


def test_the_plugin_uses_the_hf_captioner_named_in_the_environment(tiny_blip, grounded_bot, monkeypatch):
    from assistant.captioning import HFCaptioner

    monkeypatch.setenv("MMA_CAPTION_MODEL", tiny_blip)
    picture = Image.new("RGB", (40, 40), "green")
    context = ToolContext(images=[picture], assistant=grounded_bot)
    [result] = [e for e in ToolRunner([tool_spec(caption_image)], MediaConfig(), context).run([ToolCall("caption_image", {})])
                if isinstance(e, ToolResult)]
    assert result.ok and result.message["content"][0]["text"] == HFCaptioner(tiny_blip, max_new_tokens=40).caption(picture).text


def test_torchrun_shards_a_folder_over_two_cpu_processes(grounded_bot, pictures, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    artifact = tmp_path / "artifact"
    grounded_bot.save_pretrained(artifact)
    out = tmp_path / "rows.jsonl"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "plugins.captioning", str(pictures), "--out", str(out), "--adapter", str(artifact), "--detail", "short"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "caption 1/2" in done.stderr and done.stdout.count("rows written") == 1  # two shards, one join
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == ["photos/a.png", "photos/b.png", "photos/d.jpg", "photos/more/c.png"]
    assert not list(tmp_path.glob("rows.jsonl.part*"))


def test_a_detailed_caption_encodes_the_picture_once(grounded_bot):
    picture = Image.new("RGB", (40, 40), (10, 200, 90))
    before = grounded_bot.stats.encoder_calls
    AssistantCaptioner(grounded_bot, max_new_tokens=4).caption(picture, "detailed")
    assert grounded_bot.stats.encoder_calls == before + 1  # the grounded cells reuse the chat's features
