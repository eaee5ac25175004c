"""The synthetic scene domain: determinism, answers re-derived from the object list by an
independent parser, unambiguous positions, pixels, row formats, splits and the command line."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import scenes
from training.data.scene_layout import COLOURS, SHAPES, Scene, SceneConfig, SceneObject
from training.data.scene_questions import CAPTION_PROMPTS, QUESTION_TYPES
from training.metrics import normalise_answer as normalize_answer
from training.data.scene_render import scene_png
from training.data.scenes import (
    DatasetConfig,
    build_dataset,
    comparison,
    dialogue,
    generate_scene,
    questions,
    render,
    scene_seed,
    write_examples,
)

SAMPLE_SCENES = 200
COLOUR = "|".join(COLOURS)
SHAPE = "|".join(SHAPES)
PHRASES = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom", "in the center": "center"}
PHRASE = "|".join(PHRASES)


def sample_scenes(count: int = SAMPLE_SCENES, seed: int = 0) -> list[tuple[Scene, random.Random]]:
    found = []
    for index in range(count):
        rng = random.Random(scene_seed(seed, "test-suite", index))
        found.append((generate_scene(rng), rng))
    return found


def only(scene: Scene, **attributes: str | None) -> SceneObject:
    """The single object matching the given attributes; fails when the reference is ambiguous."""
    matching = [o for o in scene.objects if all(v is None or getattr(o, k) == v for k, v in attributes.items())]
    assert len(matching) == 1, f"reference {attributes} matches {len(matching)} objects"
    return matching[0]


def count(scene: Scene, noun: str) -> int:
    if noun == "objects":
        return len(scene.objects)
    if noun.endswith(" objects"):
        return sum(o.colour == noun.split()[0] for o in scene.objects)
    return sum(o.shape + "s" == noun for o in scene.objects)


def parse_caption(text: str) -> Counter:
    assert text.startswith(("A ", "An ")) and text.endswith(".")
    phrases = re.split(r", | and ", text[:-1])
    found = Counter()
    for phrase in phrases:
        match = re.fullmatch(rf"(?:a|an|A|An) (small|large) ({COLOUR}) ({SHAPE}) ({PHRASE})", phrase)
        assert match, f"caption phrase {phrase!r}"
        found[(match[1], match[2], match[3], PHRASES[match[4]])] += 1
    return found


def oracle(scene: Scene, question: str, referent: SceneObject | None) -> tuple[str, SceneObject | None]:
    """The answer re-derived from the question text and the object list, plus the object the
    question is about (for "it" in the next turn)."""
    if match := re.fullmatch(rf"What color is the (?:(small|large) )?({SHAPE})(?: ({PHRASE}))?\?", question):
        obj = only(scene, size=match[1], shape=match[2], position=PHRASES.get(match[3]))
        return obj.colour, obj
    if match := re.fullmatch(rf"What shape is the (?:(small|large) )?({COLOUR}) object(?: ({PHRASE}))?\?", question):
        obj = only(scene, size=match[1], colour=match[2], position=PHRASES.get(match[3]))
        return obj.shape, obj
    if match := re.fullmatch(rf"Where is the ({COLOUR}) ({SHAPE})\?", question):
        obj = only(scene, colour=match[1], shape=match[2])
        return obj.position, obj
    if match := re.fullmatch(rf"How many ((?:{SHAPE})s|(?:{COLOUR}) objects|objects) are there\?", question):
        return str(count(scene, match[1])), None
    if match := re.fullmatch(rf"Is there (a|an) ({COLOUR}) ({SHAPE})\?", question):
        assert match[1] == ("an" if match[2][0] in "aeiou" else "a")
        present = any(o.colour == match[2] and o.shape == match[3] for o in scene.objects)
        return ("yes" if present else "no"), None
    if question in ("What color is it?", "What shape is it?", "What size is it?", "Where is it?"):
        assert referent is not None, f"{question!r} with nothing to refer to"
        attribute = {"color": "colour", "shape": "shape", "size": "size"}.get(question.split()[1], "position")
        return getattr(referent, attribute), referent
    raise AssertionError(f"unparsed question {question!r}")


def check_caption(scene: Scene, text: str) -> None:
    expected = Counter((o.size, o.colour, o.shape, o.position) for o in scene.objects)
    assert parse_caption(text) == expected


def check_turns(scene: Scene, turns: list[tuple[str, str]]) -> None:
    referent = None
    for index, (question, answer) in enumerate(turns):
        if question in CAPTION_PROMPTS:
            check_caption(scene, answer)
            continue
        expected, referent = oracle(scene, question, referent if index else None)
        assert answer == expected, f"{question!r}: {answer!r} != {expected!r}"
        assert answer == answer.lower() and " " not in answer


def check_comparison(first: Scene, second: Scene, question: str, answer: str) -> None:
    match = re.fullmatch(rf"Which image has more ((?:{SHAPE})s|(?:{COLOUR}) objects|objects), the first or the second\?", question)
    assert match, question
    first_count, second_count = count(first, match[1]), count(second, match[1])
    assert first_count != second_count
    assert answer == ("first" if first_count > second_count else "second")


def test_answers_are_correct_by_construction() -> None:
    found = sample_scenes()
    types = Counter()
    for index, (scene, rng) in enumerate(found):
        single = questions(scene, rng)
        types.update(qa.question_type for qa in single)
        for qa in single:
            check_turns(scene, [(qa.question, qa.answer)])
        turns = dialogue(scene, rng)
        assert 3 <= len(turns) <= 4 and {qa.question_type for qa in turns} == {"multi_turn"}
        assert len({qa.question for qa in turns}) == len(turns)
        check_turns(scene, [(qa.question, qa.answer) for qa in turns])
        other = found[index - 1][0]
        qa = comparison(other, scene, rng)
        if qa is None:
            assert all(count(other, n) == count(scene, n) for n in ["objects"] + [s + "s" for s in SHAPES])
        else:
            check_comparison(other, scene, qa.question, qa.answer)
    assert min(types[kind] for kind in ("colour", "shape", "count", "position", "existence", "caption")) > SAMPLE_SCENES * 0.8


def test_answer_balance_and_zero_counts() -> None:
    answers: dict[str, Counter] = {"existence": Counter(), "count": Counter(), "comparison": Counter()}
    found = sample_scenes(400, seed=1)
    for index, (scene, rng) in enumerate(found):
        for qa in questions(scene, rng):
            if qa.question_type in answers:
                answers[qa.question_type][qa.answer] += 1
        qa = comparison(found[index - 1][0], scene, rng)
        if qa is not None:
            answers["comparison"][qa.answer] += 1
    for kind, yes_like in (("existence", "yes"), ("comparison", "first")):
        share = answers[kind][yes_like] / sum(answers[kind].values())
        assert 0.4 < share < 0.6, (kind, answers[kind])
    assert answers["count"]["0"] > 0.1 * 400
    assert set(answers["count"]) <= {str(n) for n in range(7)} and {"1", "2", "3"} <= set(answers["count"])


def test_scene_invariants_and_unambiguous_positions() -> None:
    size = SceneConfig().canvas_size
    low, high = 0.3 * size, 0.7 * size  # plain-language regions, wider than the generator's
    sides = {"small": [], "large": []}
    for scene, _ in sample_scenes():
        assert 1 <= len(scene.objects) <= 6
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(scene.objects)
        for obj in scene.objects:
            left, top, right, bottom = obj.bbox
            assert right - left == bottom - top
            sides[obj.size].append(right - left)
            inside = {
                "left": right <= low and top >= 0.25 * size and bottom <= 0.75 * size,
                "right": left >= high and top >= 0.25 * size and bottom <= 0.75 * size,
                "top": bottom <= low and left >= 0.25 * size and right <= 0.75 * size,
                "bottom": top >= high and left >= 0.25 * size and right <= 0.75 * size,
                "center": low <= left and right <= high and low <= top and bottom <= high,
            }
            assert [word for word, ok in inside.items() if ok] == [obj.position], obj
            for other in scene.objects:
                if other is not obj:
                    a, b = obj.bbox, other.bbox
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], "objects overlap"
        for rgb in COLOURS.values():
            assert math.dist(scene.background, rgb) >= 70
    assert max(sides["small"]) < min(sides["large"])
    assert len(set(scene.background for scene, _ in sample_scenes(50))) > 10


def test_rendered_pixels_match_the_objects() -> None:
    for scene, _ in sample_scenes(100):
        pixels = np.asarray(render(scene))  # (H, W, 3)
        assert pixels.shape == (224, 224, 3)
        assert tuple(pixels[0, 0]) == scene.background == tuple(pixels[-1, -1])
        for obj in scene.objects:
            x, y = obj.centre
            assert tuple(pixels[y, x]) == COLOURS[obj.colour], obj
            left, top, right, bottom = obj.bbox
            patch = pixels[top:bottom, left:right]
            coverage = np.all(patch == COLOURS[obj.colour], axis=-1).mean()  # share of the box filled
            low, high = {"square": (0.99, 1.0), "circle": (0.74, 0.82), "triangle": (0.47, 0.56), "star": (0.29, 0.4)}[obj.shape]
            assert low <= coverage <= high, (obj, coverage)  # pi/4 for a circle, 1/2 for a triangle
            assert (tuple(patch[0, 0]) == scene.background) == (obj.shape != "square")  # top-left corner


def test_same_seed_gives_identical_bytes_and_rows(tmp_path: Path) -> None:
    def build(name: str, seed: int) -> dict[str, bytes]:
        root = tmp_path / name
        build_dataset(DatasetConfig(out=str(root), train=6, val=2, test=2, seed=seed))
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, again, other = build("a", 5), build("b", 5), build("c", 6)
    assert first == again
    assert first.keys() == other.keys()
    images = [name for name in first if name.endswith(".png")]
    assert len(images) == 10 and sum(first[name] != other[name] for name in images) >= 9
    assert first["train.jsonl"] != other["train.jsonl"]
    scene = generate_scene(random.Random(11))
    assert scene == generate_scene(random.Random(11)) != generate_scene(random.Random(12))
    assert scene_png(scene) == scene_png(generate_scene(random.Random(11)))


def check_regions(pictures: list[Scene], regions: list[dict]) -> None:
    """One region per object of every picture, with its box (fractions) and "size colour shape position"."""
    expected = Counter(
        (index, tuple(round(v / scene.canvas_size, 4) for v in o.bbox), f"{o.size} {o.colour} {o.shape} {o.position}")
        for index, scene in enumerate(pictures) for o in scene.objects
    )
    assert Counter((r["image"], tuple(r["box"]), r["text"]) for r in regions) == expected


def load_scenes(root: Path, split: str) -> dict[str, Scene]:
    found = {}
    for line in (root / f"{split}_scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        objects = tuple(SceneObject(**{**o, "bbox": tuple(o["bbox"])}) for o in record["objects"])
        found[record["image"]] = Scene(objects, tuple(record["background"]), 224)
    return found


def test_writers_produce_consistent_rows_with_relative_existing_images(tmp_path: Path) -> None:
    summary = build_dataset(DatasetConfig(out=str(tmp_path), train=12, val=3, test=3, seed=2))
    types = Counter()
    for split in scenes.SPLITS:
        records = load_scenes(tmp_path, split)
        assert len(records) == summary["splits"][split]["scenes"]
        for image, scene in records.items():  # the stored PNG decodes to the scene's pixels
            assert Image.open(tmp_path / image).convert("RGB").tobytes() == render(scene).tobytes()
        messages_rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        llava_rows = json.loads((tmp_path / f"{split}_llava.json").read_text())
        assert [r["id"] for r in messages_rows] == [r["id"] for r in llava_rows]
        assert len(set(r["id"] for r in llava_rows)) == len(llava_rows) == summary["splits"][split]["rows"]
        for m_row, l_row in zip(messages_rows, llava_rows):
            assert m_row["question_type"] == l_row["question_type"] in QUESTION_TYPES
            types[l_row["question_type"]] += 1
            images = [l_row["image"]] if isinstance(l_row["image"], str) else l_row["image"]
            assert len(images) == (2 if l_row["question_type"] == "comparison" else 1)
            for path in images:
                assert not Path(path).is_absolute() and ".." not in Path(path).parts
                assert (tmp_path / path).is_file() and path.startswith(f"images/{split}_")
            conversations = l_row["conversations"]
            assert [t["from"] for t in conversations] == ["human", "gpt"] * (len(conversations) // 2)
            assert conversations[0]["value"].startswith("<image>\n" * len(images))
            assert sum(t["value"].count("<image>") for t in conversations) == len(images)
            messages = m_row["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
            image_parts = [p for m in messages for p in m["content"] if p["type"] == "image"]
            assert [p["image"] for p in image_parts] == images == [p["image"] for p in messages[0]["content"][:-1]]
            turns = [(messages[i]["content"][-1]["text"], messages[i + 1]["content"][0]["text"]) for i in range(0, len(messages), 2)]
            assert turns == [(c["value"].replace("<image>\n", ""), a["value"]) for c, a in zip(conversations[::2], conversations[1::2])]
            assert m_row["regions"] == l_row["regions"]
            check_regions([records[path] for path in images], m_row["regions"])
            if l_row["question_type"] == "comparison":
                check_comparison(records[images[0]], records[images[1]], *turns[0])
            else:
                check_turns(records[images[0]], turns)
    assert dict(types) == {k: v for k, v in summary["question_types"].items() if v} and set(types) == set(QUESTION_TYPES)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_splits_use_disjoint_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_dataset(DatasetConfig(out=str(tmp_path), train=20, val=5, test=5, format="messages"))
    seeds = {split: {json.loads(line)["seed"] for line in (tmp_path / f"{split}_scenes.jsonl").read_text().splitlines()} for split in scenes.SPLITS}
    assert [len(s) for s in seeds.values()] == [20, 5, 5]
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"] or seeds["val"] & seeds["test"])
    assert not (tmp_path / "train_llava.json").exists()
    monkeypatch.setattr(scenes, "scene_seed", lambda seed, split, index: index)  # every split alike
    with pytest.raises(ValueError, match="used by both"):
        build_dataset(DatasetConfig(out=str(tmp_path / "clash"), train=2, val=2, test=0))


def test_command_line_and_examples(tmp_path: Path) -> None:
    summary = scenes.main(["--out", str(tmp_path / "data"), "--train", "3", "--val", "1", "--test", "1",
                           "--format", "llava", "--examples", str(tmp_path / "ui"), "--max-objects", "3"])
    assert summary["splits"]["train"]["scenes"] == 3 and summary["scene"]["max_objects"] == 3
    assert sorted(p.name for p in (tmp_path / "data").glob("*.json*")) == [
        "summary.json", "test_llava.json", "test_scenes.jsonl", "train_llava.json", "train_scenes.jsonl", "val_llava.json", "val_scenes.jsonl"]
    entries = json.loads((tmp_path / "ui" / "examples.json").read_text())
    assert [e["question_type"] for e in entries] == ["colour", "count", "position"]
    for number, entry in enumerate(entries, start=1):
        assert entry["image"] == f"scene_{number}.png"
        scene = generate_scene(random.Random(entry["scene_seed"]), SceneConfig(max_objects=3))
        assert 2 <= len(scene.objects) <= 3
        assert Image.open(tmp_path / "ui" / entry["image"]).convert("RGB").tobytes() == render(scene).tobytes()
        check_turns(scene, [(entry["question"], entry["answer"])])
    assert entries == write_examples(tmp_path / "again", config=SceneConfig(max_objects=3))
    with pytest.raises(SystemExit):
        scenes.main(["--train", "1"])  # neither --out nor --examples


def test_normalize_answer() -> None:
    assert normalize_answer(" Two. ") == "2"
    assert normalize_answer("The Left!") == "left"
    assert normalize_answer("Yes") == "yes"
    assert normalize_answer("centre") == "center"
    assert normalize_answer("a") == "a"
