"""The text-to-image plugin: engines by path, the independent checker, self-checking, edits, limits, cancelling."""

from __future__ import annotations

import math
import random
import threading

import numpy as np
import torch
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

    def drawn_prompt(self, request):
        return request.prompt


def _one(colour, seed=0):
    while True:
        scene = generate_scene(random.Random(seed), SceneConfig(canvas_size=128, min_objects=1, max_objects=1))
        if scene.objects[0].colour == colour and scene.objects[0].shape == "circle":
            return scene
        seed += 1


def test_self_checking_draws_again_with_the_next_seed_until_the_picture_matches():
    engine = Scripted([_one("blue"), _one("red")])
    [(picture, verdict, tries, drawn_prompt)] = draw_checked(engine, ImageRequest("a red circle", seed=7), tries=3)
    assert verdict.passed and tries == 2 and engine.seeds == [7, 8] and drawn_prompt == "a red circle"
    engine = Scripted([_one("blue")])
    [(picture, verdict, tries, _)] = draw_checked(engine, ImageRequest("a red circle", seed=7), tries=3)
    assert not verdict.passed and tries == 3  # never right: the last try is kept, and reported as a miss
    [kept] = draw_checked(Scripted([_one("blue")]), ImageRequest("a red circle"), tries=1)
    assert kept.tries == 1


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


def test_the_layout_planner_spells_out_every_object_and_keeps_what_the_prompt_gave():
    from plugins.text_to_image.layout import MAX_PER_REGION, plan_prompt

    for seed in range(20):
        planned = parse_prompt(plan_prompt("three stars", seed))
        assert [(want.count, want.shape, want.size) for want in planned] == [(1, "star", "large")] * 3
        assert len({want.colour for want in planned}) == 3 and all(want.colour in PALETTE for want in planned)
        regions = [want.position for want in planned]
        assert max(regions.count(region) for region in regions) <= MAX_PER_REGION
        kept = parse_prompt(plan_prompt("a small red circle on the left and two blue squares", seed))
        assert kept[0] == parse_prompt("a small red circle on the left")[0]
        assert [(want.colour, want.shape, want.count) for want in kept[1:]] == [("blue", "square", 1)] * 2
    plans = {plan_prompt("a red circle and a green star", seed) for seed in range(10)}
    assert len(plans) > 1 and plan_prompt("a red circle", 3) == plan_prompt("a red circle", 3)  # seeded: a retry tries another layout
    assert plan_prompt("a sunset over the sea", 0) == "a sunset over the sea"  # nothing the domain can lay out
    assert plan_prompt("six circles and two stars", 0) == "six circles and two stars"  # more than a scene holds


def test_a_scene_model_draws_the_planned_prompt_only_when_it_was_trained_for_it(scene_folder):
    from dataclasses import replace

    engine, request = SceneEngine(scene_folder), ImageRequest("two circles", seed=4)
    assert engine.model.config.plan_layout
    assert [(want.count, want.shape) for want in parse_prompt(engine.drawn_prompt(request))] == [(1, "circle")] * 2
    engine.model.config = replace(engine.model.config, plan_layout=False)
    assert engine.drawn_prompt(request) == "two circles"


def test_planned_objects_get_boxes_inside_their_regions_clear_of_each_other():
    from plugins.text_to_image.layout import GAP, REGION_BOXES, SIDES, plan_scene

    for seed in range(30):
        prompt, layout = plan_scene("two circles, a small red star at the top and a green square on the left", seed)
        wanted = parse_prompt(prompt)
        assert [phrase for phrase, _ in layout] == [f"a {w.size} {w.colour} {w.shape}" for w in wanted]
        for want, (_, (left, top, right, bottom)) in zip(wanted, layout):
            region = REGION_BOXES[want.position]
            assert region[0] <= left < right <= region[2] and region[1] <= top < bottom <= region[3], (want, layout)
            assert right - left == pytest.approx(bottom - top) and (SIDES["small"][0] <= right - left <= SIDES["large"][1])
        boxes = [box for _, box in layout]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] + GAP <= b[0] + 1e-9 or b[2] + GAP <= a[0] + 1e-9 or a[3] + GAP <= b[1] + 1e-9 or b[3] + GAP <= a[1] + 1e-9
    assert plan_scene("a sunset", 0) is None


def test_the_layout_map_paints_each_phrase_over_its_box_and_reaches_the_unet(scene_folder):
    import torch.nn.functional as F

    model = SceneEngine(scene_folder).model
    side, channels = model.config.resolution, model.config.layout_channels
    layout = [("a large red circle", (0.0, 0.0, 0.5, 0.25)), ("a small blue star", (0.5, 0.5, 0.75, 0.75))]
    maps = model.layout_map([layout, []])
    assert maps.shape == (2, channels + model.config.box_channels, model.config.grid, model.config.grid) and not maps[1].any()
    pixels = F.pixel_shuffle(maps[:, channels:], model.config.patch)[0]  # back in pixels
    inside, across, down = pixels[:3]  # (R, R) each
    assert inside.sum().item() == (0.5 * 0.25 + 0.25 * 0.25) * side * side
    assert inside[0, 0] == 1 and inside[-1, -1] == 0 and inside[side // 2, side // 2] == 1
    assert -1 < across[0, 0] < -0.9 and 0.9 < across[0, side // 2 - 1] < 1 and -1 < down[0, 0] < -0.8  # where in its box
    assert len(pixels) == 3 + 4 * len(model.config.box_frequencies) > 3  # then sin, cos of pi*k*x and of pi*k*y per k
    k = model.config.box_frequencies[-1]
    assert torch.allclose(pixels[3 + 4 * (len(model.config.box_frequencies) - 1)], torch.sin(math.pi * k * across) * inside, atol=1e-5)
    assert torch.allclose(pixels[4 + 4 * (len(model.config.box_frequencies) - 1)], torch.cos(math.pi * k * across) * inside, atol=1e-5)
    assert not pixels[:, inside == 0].any()  # nothing outside the boxes
    red = model.prompts.phrase_vectors(["a large red circle"])[0] @ model.projection
    assert torch.allclose(maps[0, :channels, 0, 0], red, atol=1e-5)  # the first cell lies wholly in the red circle's box
    with_layout = model.generate("a red circle", seed=1, layout=layout)[0]
    without = model.generate("a red circle", seed=1)[0]
    assert np.asarray(with_layout).tobytes() != np.asarray(without).tobytes()


def test_the_model_card_states_the_scores_and_what_the_planner_decides():
    from training.recipes.build_text_to_image import model_card

    scores = {"tries": 3, "prompts": 200, "seconds_per_picture_median": 0.5,
              **{category: {"first_try": 0.5, "within_tries": 0.75, "prompts": 50} for category in ("single", "two", "position", "count")}}
    summary = {"train": {"parameters": 17e6, "train_time_s": 1450.0, "steps": 1500, "batch_size": 16,
                         "model_config": {"resolution": 96, "patch": 3, "channels": [64, 64, 128, 256], "default_steps": 20}},
               "guidance": {"chosen": 3.0, "validation_scores": {"3.0": 0.5}},
               "eval": {"held_out": scores, "independent": scores},
               "prompt_only": {"held_out": {**scores, "tries": 1}, "independent": {**scores, "tries": 1}}}
    card = model_card(summary)
    assert "| single (50) | 50% | 75% |" in card and "24.2 minutes" in card and "The planner decides where" in card
    assert "The prompt alone" in card and "It cannot" in card and "block widths\n64, 64, 128, 256" in card
    assert "The prompt alone" not in model_card({**summary, "prompt_only": None})
