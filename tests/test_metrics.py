"""Evaluation metrics and the text-regression key matching, on hand-made cases."""

import pytest

from training.evaluate import score
from training.metrics import bleu4, exact_match, normalise_answer
from training.text_regression import TEXT_PROMPTS, has_key


@pytest.mark.parametrize(
    "prediction, reference",
    [("Red.", "red"), ("The circle", "circle"), ("two", "2"), (" LEFT! ", "left"), ("centre", "center"), ("a", "a")],
)
def test_normalised_answers_match(prediction, reference):
    assert normalise_answer(prediction) == normalise_answer(reference)


@pytest.mark.parametrize("prediction, reference", [("red", "blue"), ("2", "3"), ("no", "yes"), ("left side", "left")])
def test_different_answers_do_not_match(prediction, reference):
    assert normalise_answer(prediction) != normalise_answer(reference)


def test_exact_match_share():
    assert exact_match(["red", "Two", "left"], ["red", "2", "right"]) == pytest.approx(2 / 3)
    assert exact_match([], []) == 0.0


def test_bleu4_bounds():
    assert bleu4(["a large red circle on the left"], ["a large red circle on the left"]) == pytest.approx(100.0)
    assert bleu4(["blue squares everywhere today"], ["a large red circle on the left"]) < 10.0
    partial = bleu4(["a large red circle on the right"], ["a large red circle on the left"])
    assert 30.0 < partial < 100.0


def test_score_reports_types_pope_and_captions():
    records = [
        {"type": "colour", "reference": "red", "prediction": "red", "correct": True},
        {"type": "colour", "reference": "blue", "prediction": "red", "correct": False},
        {"type": "existence", "reference": "no", "prediction": "no", "correct": True},
        {"type": "existence", "reference": "no", "prediction": "yes", "correct": False},
        {"type": "existence", "reference": "yes", "prediction": "yes", "correct": True},
        {"type": "comparison", "reference": "first", "prediction": "first", "correct": True},
        {"type": "caption", "reference": "A large red circle on the left.", "prediction": "A large red circle on the left.", "correct": True},
    ]
    report = score(records)
    assert report["accuracy_by_type"] == {"colour": 0.5, "comparison": 1.0, "existence": pytest.approx(2 / 3)}
    assert report["overall_vqa_accuracy"] == pytest.approx(4 / 6)  # captions are not short answers
    assert report["pope_absent_object_accuracy"] == 0.5
    assert report["comparison_accuracy"] == 1.0
    assert report["captions"] == 1 and report["caption_bleu4"] > 0


def test_text_keys_match_whole_words_and_alternatives():
    assert has_key("The capital of France is Paris.", "Paris")
    assert not has_key("Parisian food is great", "Paris")
    assert has_key("A spider has 8 legs.", "eight|8") and has_key("Eight legs.", "eight|8")
    assert not has_key("It is 100 degrees", "0")
    assert len(TEXT_PROMPTS) >= 20
