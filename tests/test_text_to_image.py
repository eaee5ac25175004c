"""The text-to-image plugin: engines by path, the independent checker, self-checking, edits, limits, cancelling."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from PIL import Image

from assistant.errors import AssistantError
from assistant.tools.calls import ToolCall
from assistant.tools.context import ToolContext
from assistant.tools.events import ToolProgress, ToolResult
from assistant.tools.runner import ToolRunner
from assistant.tools.spec import tool_specs
from assistant.config import MediaConfig
from plugins.text_to_image import engine as engines
from plugins.text_to_image.checker import PALETTE, check, find_objects, parse_prompt
from plugins.text_to_image.engine import DiffusersEngine, ImageRequest, SceneEngine, TextToImageConfig
from plugins.text_to_image.prompts import revise
from plugins.text_to_image.scene_model import GenerationCancelled
from plugins.text_to_image.tool import draw_checked, generate_image, resolve_prompt
from tests.tiny_diffusion import tiny_scene_model, tiny_stable_diffusion
from training.data.scene_layout import COLOURS, SceneConfig, generate_scene
from training.data.scene_render import render


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    return tiny_scene_model(tmp_path_factory.mktemp("scene_model") / "model")


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "pipeline")


def _truth(scene):
    return sorted((obj.colour, obj.shape, obj.size, obj.position) for obj in scene.objects)


@pytest.mark.parametrize("canvas", [128, 224])
def test_the_checker_reads_the_generators_training_pictures(canvas):
    scenes = [generate_scene(random.Random(f"check/{canvas}/{index}"), SceneConfig(canvas_size=canvas)) for index in range(150)]
    right = sum(_truth(scene) == sorted((o.colour, o.shape, o.size, o.position) for o in find_objects(render(scene)))
                for scene in scenes)
    assert right / len(scenes) >= 0.98, right


def test_the_checker_palette_is_the_domains():
    assert PALETTE == COLOURS  # written apart from the generator, so this is checked rather than imported


def test_a_wrong_colour_picture_fails_the_check_and_the_right_prompt_passes():
    scene = generate_scene(random.Random(3), SceneConfig(canvas_size=128, min_objects=1, max_objects=1))
    obj = scene.objects[0]
    wrong = next(colour for colour in PALETTE if colour != obj.colour)
    assert check(f"a {obj.colour} {obj.shape}", render(scene)).passed
    verdict = check(f"a {wrong} {obj.shape}", render(scene))
    assert not verdict.passed and verdict.checks == {f"1 {wrong} {obj.shape}": False}
    assert not check(f"two {obj.shape}s", render(scene)).passed
    assert not check(f"a {obj.colour} {obj.shape} {'on the left' if obj.position != 'left' else 'on the right'}", render(scene)).passed


def test_a_blank_or_noisy_picture_holds_no_objects():
    assert find_objects(Image.new("RGB", (128, 128), (200, 200, 200))) == []
    noise = np.random.default_rng(0).integers(150, 230, (128, 128, 3), dtype=np.uint8)
    assert not check("a red circle", Image.fromarray(noise)).passed


@pytest.mark.parametrize("prompt,wanted", [
    ("a large red circle on the left", ["1 large red circle at left"]),
    ("two blue stars and a small white square at the top", ["2 blue stars", "1 small white square at top"]),
    ("one big red ball", ["1 large red circle"]),
    ("3 boxes below", ["3 squares at bottom"]),
    ("a cat on a mat", []),
])
def test_prompts_are_parsed_into_what_they_ask_for(prompt, wanted):
    assert [want.describe() for want in parse_prompt(prompt)] == wanted


@pytest.mark.parametrize("previous,instruction,revised", [
    ("a large red circle", "make the circle blue", "a large blue circle"),
    ("a red circle and a blue star", "make the star green", "a red circle and a green star"),
    ("a red circle on the left", "move it to the right", "a red circle on the right"),
    ("a red circle and a blue star", "remove the star", "a red circle"),
    ("a red circle", "add a green square", "a red circle and a green square"),
    ("a red circle", "make it nicer", None),
])
def test_edits_apply_to_the_previous_prompt(previous, instruction, revised):
    assert revise(previous, instruction) == revised


def test_an_edit_request_uses_the_conversations_last_generate_image_prompt():
    context = ToolContext(tool_texts=[("generate_image", "Prompt: a large red circle\nPicture 1 ..."), ("calculator", "Prompt: 4")])
    assert resolve_prompt("make the circle blue", context)[0] == "a large blue circle"
    assert resolve_prompt("a green star", context)[0] == "a green star"  # a new description, not an edit
    assert resolve_prompt("make the circle blue", ToolContext())[0] == "make the circle blue"  # nothing earlier


def test_a_scene_model_saves_loads_and_generates_the_same_pictures(scene_folder):
    engine = SceneEngine(scene_folder)
    first = engine.generate(ImageRequest("a red circle", seed=5, images=2))
    again = SceneEngine(scene_folder).generate(ImageRequest("a red circle", seed=5, images=2))
    assert [picture.size for picture in first] == [(32, 32)] * 2
    assert [np.asarray(p).tobytes() for p in first] == [np.asarray(p).tobytes() for p in again]
    other = engine.generate(ImageRequest("a red circle", seed=6))
    assert np.asarray(other[0]).tobytes() != np.asarray(first[0]).tobytes()
    with pytest.raises(AssistantError, match="draws 32x32"):
        engine.generate(ImageRequest("a red circle", width=64, height=64))


def test_a_scene_model_is_cancelled_between_steps_and_reports_progress(scene_folder):
    engine, cancel, steps = SceneEngine(scene_folder), threading.Event(), []

    def on_step(done, total):
        steps.append((done, total))
        if done == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after 2 of 3 steps"):
        engine.generate(ImageRequest("a red circle"), on_step, cancel)
    assert steps == [(1, 3), (2, 3)]


def test_a_prompt_longer_than_the_prompt_encoder_reads_is_refused(scene_folder):
    with pytest.raises(AssistantError, match="at most 48"):
        SceneEngine(scene_folder).generate(ImageRequest(" ".join(["red circle"] * 40)))


def test_a_diffusers_pipeline_loads_by_path_generates_and_cancels(pipeline_folder):
    engine = DiffusersEngine(str(pipeline_folder))
    pictures = engine.generate(ImageRequest("a red circle", steps=2, width=64, height=64, images=2, negative_prompt="blue", seed=1))
    assert [picture.size for picture in pictures] == [(64, 64)] * 2
    again = engine.generate(ImageRequest("a red circle", steps=2, width=64, height=64, images=2, negative_prompt="blue", seed=1))
    assert np.asarray(again[0]).tobytes() == np.asarray(pictures[0]).tobytes()
    cancel, steps = threading.Event(), []

    def on_step(done, total):
        steps.append(done)
        cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(ImageRequest("a red circle", steps=4, width=64, height=64), on_step, cancel)
    assert steps == [1]


def test_a_missing_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(AssistantError, match="cannot load the text-to-image pipeline"):
        DiffusersEngine(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("request_,message", [
    (ImageRequest(""), "empty"),
    (ImageRequest("x" * 301), "the prompt is 301 characters"),
    (ImageRequest("a red circle", steps=51), "steps must be 1-50"),
    (ImageRequest("a red circle", images=5), "images must be 1-4"),
    (ImageRequest("a red circle", width=100), "multiple of 8"),
    (ImageRequest("a red circle", height=4096), "from 64 to 1024"),
    (ImageRequest("a red circle", guidance=99.0), "guidance"),
])
def test_requests_over_the_limits_are_refused(request_, message):
    with pytest.raises(AssistantError, match=message):
        request_.checked(TextToImageConfig())


class Scripted:
    """An engine that draws the given scenes in turn (a wrong picture first, then the right one)."""

    scene_domain = True
    name = "scripted"

    def __init__(self, scenes):
        self.scenes, self.seeds = list(scenes), []

    def generate(self, request, on_step=None, cancel=None):
        self.seeds.append(request.seed)
        if on_step is not None:
            on_step(1, 1)
        return [render(self.scenes[min(len(self.seeds), len(self.scenes)) - 1])]


def _one(colour, seed=0):
    while True:
        scene = generate_scene(random.Random(seed), SceneConfig(canvas_size=128, min_objects=1, max_objects=1))
        if scene.objects[0].colour == colour and scene.objects[0].shape == "circle":
            return scene
        seed += 1


def test_self_checking_draws_again_with_the_next_seed_until_the_picture_matches():
    engine = Scripted([_one("blue"), _one("red")])
    [(picture, verdict, tries)] = draw_checked(engine, ImageRequest("a red circle", seed=7), tries=3)
    assert verdict.passed and tries == 2 and engine.seeds == [7, 8]
    engine = Scripted([_one("blue")])
    [(picture, verdict, tries)] = draw_checked(engine, ImageRequest("a red circle", seed=7), tries=3)
    assert not verdict.passed and tries == 3  # never right: the last try is kept, and reported as a miss
    [(_, _, tries)] = draw_checked(Scripted([_one("blue")]), ImageRequest("a red circle"), tries=1)
    assert tries == 1


def test_the_plugin_through_the_runner_shows_the_picture_reports_progress_and_says_what_passed(monkeypatch):
    engine = Scripted([_one("blue"), _one("red")])
    monkeypatch.setattr("plugins.text_to_image.tool.load_engine", lambda config: engine)
    runner = ToolRunner(tool_specs([generate_image]), MediaConfig(), ToolContext())
    events = list(runner.run([ToolCall(name="generate_image", arguments={"prompt": "a red circle"}, id="c1")]))
    progress = [event for event in events if isinstance(event, ToolProgress)]
    [result] = [event for event in events if isinstance(event, ToolResult)]
    assert result.ok, result.message
    text = result.message["content"][0]["text"]
    assert "Prompt: a red circle" in text and "2 tries): matches the prompt (1 red circle: yes)" in text
    assert [part["type"] for part in result.message["content"][1:]] == ["image"]
    assert result.message["content"][1]["image"].size == (256, 256)  # enlarged for the chat
    assert [(event.done, event.total) for event in progress] == [(1, 1), (1, 1)] and "try 2 of 3" in progress[-1].note


def test_the_plugin_schema_refuses_an_overlong_prompt_before_drawing(monkeypatch):
    monkeypatch.setattr("plugins.text_to_image.tool.load_engine", lambda config: pytest.fail("nothing should be drawn"))
    runner = ToolRunner(tool_specs([generate_image]), MediaConfig(), ToolContext())
    [result] = list(runner.run([ToolCall(name="generate_image", arguments={"prompt": "x" * 301}, id="c1")]))
    text = result.message["content"][0]["text"]
    assert not result.ok and "do not match its schema at prompt" in text and "is too long" in text


def test_the_builtin_engine_is_loaded_by_default_and_a_scene_folder_by_path(scene_folder, monkeypatch):
    engines._load.cache_clear()
    assert isinstance(engines.load_engine(TextToImageConfig(model=str(scene_folder))), SceneEngine)
    monkeypatch.setattr(engines, "SHIPPED_MODEL", scene_folder.parent / "missing")
    engines._load.cache_clear()
    with pytest.raises(AssistantError, match="build it with"):
        engines.load_engine(TextToImageConfig())
    engines._load.cache_clear()


def test_the_limits_come_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("MMA_TEXT_TO_IMAGE_MAX_STEPS", "10")
    monkeypatch.setenv("MMA_TEXT_TO_IMAGE_MODEL", "some/model")
    config = TextToImageConfig.from_env()
    assert (config.max_steps, config.model, config.max_images) == (10, "some/model", 4)
    with pytest.raises(AssistantError, match="steps must be 1-10"):
        ImageRequest("a red circle", steps=11).checked(config)
    monkeypatch.setenv("MMA_TEXT_TO_IMAGE_MAX_TRIES", "many")
    with pytest.raises(AssistantError, match="MMA_TEXT_TO_IMAGE_MAX_TRIES='many' is not a int"):
        TextToImageConfig.from_env()
    monkeypatch.setenv("MMA_TEXT_TO_IMAGE_MAX_TRIES", "0")
    with pytest.raises(AssistantError, match="max_tries must be a positive integer"):
        TextToImageConfig.from_env()


def test_the_command_line_draws_and_writes_the_pictures(scene_folder, tmp_path, capsys):
    from plugins.text_to_image.__main__ import main

    engines._load.cache_clear()
    assert main(["a red circle", "--model", str(scene_folder), "--images", "2", "--out", str(tmp_path / "pic.png")]) == 0
    assert Image.open(tmp_path / "pic_1.png").size == (32, 32) and (tmp_path / "pic_2.png").is_file()
    assert "pic_1.png: 32x32" in capsys.readouterr().out
    assert main(["a red circle", "--model", str(scene_folder), "--steps", "99"]) == 2
    assert "steps must be 1-50" in capsys.readouterr().err
