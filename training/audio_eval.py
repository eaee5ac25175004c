"""Audio evaluation tasks (``python -m training.evaluate --task audio | transcription``).

- ``audio``: an assistant on held-out audio rows of the recipe's data folder
  (``training.data.audio_rows``): spoken-question accuracy per question type against the same
  questions typed (the ratio spoken / typed is the figure that matters), sound-question accuracy
  per type, and the word error rate of "what did I say?" answers; then the same on the independent
  check (``training.data.audio_check``: other wording, unseen voices, sounds made another way).
  It also reads the audio connector's tokens out as words, the LLM not run (``connector_readout``).
- ``transcription``: word error rate (jiwer) of the ``transcribe_audio`` plugin's model on
  held-out sentences spoken by espeak-ng in voices the training rows use and in unseen ones.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.data.rows import Row, load_rows

# Written for this check; none of them is in training.data.audio_rows.SENTENCES.
HELD_OUT_SENTENCES = (
    "The bakery on the corner sells fresh bread every morning.", "Please send the report before Friday afternoon.",
    "Our flight was delayed by two hours.", "He painted the fence white last summer.",
    "The children are playing football in the park.", "Turn left at the second traffic light.",
    "I forgot to water the plants this week.", "The museum has a new exhibition about ancient Egypt.",
    "Could you book a table for four people?", "The river flooded after the heavy storm.",
    "She bought a new bicycle for her daughter.", "The soup needs a little more salt.",
    "We watched a documentary about whales.", "The printer on the third floor is broken.",
    "Remember to lock the door when you leave.", "The concert tickets sold out in ten minutes.",
    "My brother works as a nurse in the hospital.", "The garden is full of yellow flowers.",
    "They moved to a small village near the mountains.", "The battery of my phone is almost empty.",
)
TRAIN_VOICES = ("en-us", "en-gb+f3")
UNSEEN_VOICES = ("en-us+m7", "en-gb+f4")


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([_normalise(r) for r in references], [_normalise(h) or "<empty>" for h in hypotheses]))


def _by_type(records: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        if record["type"].startswith(prefix):
            groups[record["type"][len(prefix):]].append(record["correct"])
    return {kind: sum(values) / len(values) for kind, values in sorted(groups.items())}


def spoken_vs_typed(assistant: Any, spoken: list[Row], typed: list[Row], sounds: list[Row], said: list[Row]) -> dict[str, Any]:
    """Accuracy per type of spoken and typed questions and their ratio, sound accuracy, said WER."""
    from training.evaluate import answer_rows

    spoken_records, typed_records = answer_rows(assistant, spoken), answer_rows(assistant, typed)
    sound_records = answer_rows(assistant, sounds)
    spoken_acc, typed_acc = _by_type(spoken_records, "spoken_"), _by_type(typed_records, "typed_")
    overall = {
        "spoken": sum(r["correct"] for r in spoken_records) / max(len(spoken_records), 1),
        "typed": sum(r["correct"] for r in typed_records) / max(len(typed_records), 1),
    }
    report: dict[str, Any] = {
        "spoken_accuracy_by_type": spoken_acc,
        "typed_accuracy_by_type": typed_acc,
        "spoken_over_typed_by_type": {k: spoken_acc[k] / typed_acc[k] if typed_acc.get(k) else None for k in spoken_acc},
        "spoken_accuracy": overall["spoken"],
        "typed_accuracy": overall["typed"],
        "spoken_over_typed": overall["spoken"] / overall["typed"] if overall["typed"] else None,
        "spoken_questions": len(spoken_records),
        "sound_accuracy_by_type": _by_type(sound_records, "sound_"),
        "sound_questions": len(sound_records),
        "answers": spoken_records + typed_records + sound_records,
    }
    if said:
        said_records = answer_rows(assistant, said)
        report["said_wer"] = word_error_rate([r["reference"] for r in said_records], [r["prediction"] for r in said_records])
        report["said_rows"] = len(said_records)
        report["answers"] += said_records
    return report


def connector_readout(assistant: Any, rows: list[Row], blank_word: str = " background") -> dict[str, Any]:
    """How well the audio connector's tokens spell what was said, the LLM not run: each token's nearest
    word in the LLM's input embeddings, repeats collapsed and the blank word dropped (CTC's greedy
    reading), scored by WER against the row's transcript."""
    import torch

    embeddings = assistant.model.llm.get_input_embeddings().weight.detach().float()
    blank = assistant.tokenizer(blank_word, add_special_tokens=False)["input_ids"][0]
    references, readings = [], []
    for row in rows:
        parts = [part for part in row.messages[0]["content"] if isinstance(part, dict) and part.get("type") == "audio"]
        if not parts or not parts[0].get("transcript"):
            continue
        clip = assistant.parse([{"role": "user", "content": [parts[0]]}])[0].media[0].frames[0]
        with torch.no_grad():
            ids = (assistant._connected("audio", clip).float() @ embeddings.T).argmax(-1).tolist()
        collapsed = [token for index, token in enumerate(ids) if token != blank and (index == 0 or token != ids[index - 1])]
        references.append(parts[0]["transcript"])
        readings.append(assistant.tokenizer.decode(collapsed))
    return {"clips": len(references), "wer": word_error_rate(references, readings) if references else None,
            "examples": list(zip(references[:5], readings[:5]))}


def audio_report(assistant: Any, data: Path, max_rows: int | None = None, check_scenes: int = 60) -> dict[str, Any]:
    """``spoken_vs_typed`` on the data folder's held-out rows, then on the independent check."""
    from training.data.audio_check import sound_check, spoken_check

    rows, _ = load_rows(data / "test_audio.jsonl")
    typed, _ = load_rows(data / "test_typed.jsonl")
    spoken = [row for row in rows if (row.question_type or "").startswith("spoken_")][:max_rows]
    sounds = [row for row in rows if (row.question_type or "").startswith("sound_")][:max_rows]
    said = [row for row in rows if row.question_type == "said"][:max_rows]
    held_out = spoken_vs_typed(assistant, spoken, typed[: len(spoken)], sounds, said)
    held_out["connector_readout"] = connector_readout(assistant, spoken + said)
    check_spoken, check_typed = spoken_check(data, scenes=check_scenes)
    check = spoken_vs_typed(assistant, check_spoken, check_typed, sound_check(per_type=max(check_scenes // 2, 1)), [])
    return {"held_out": held_out, "independent_check": check}


def transcription_report(model: Any = None, seed: int = 0) -> dict[str, Any]:
    """WER of the transcription plugin's model on the held-out sentences, per voice group."""
    from plugins.transcription import transcribe, whisper_model
    from training.data.audio_rows import PITCHES, SPEEDS, speak

    model = model or whisper_model()
    rng = random.Random(f"transcription/{seed}")
    report: dict[str, Any] = {"sentences": len(HELD_OUT_SENTENCES), "cases": []}
    for group, voices in (("training_voices", TRAIN_VOICES), ("unseen_voices", UNSEEN_VOICES)):
        references, hypotheses = [], []
        for sentence in tqdm(HELD_OUT_SENTENCES, desc=f"transcribing ({group})", unit="clip"):
            voice = rng.choice(voices)
            samples = speak(sentence, voice, rng.randint(*SPEEDS), rng.randint(*PITCHES))
            text = transcribe(samples, model, language="en").text
            references.append(sentence)
            hypotheses.append(text)
            report["cases"].append({"voice": voice, "reference": sentence, "transcript": text})
        report[f"wer_{group}"] = word_error_rate(references, hypotheses)
    return report


def format_audio_table(report: dict[str, Any]) -> str:
    lines = ["| set | question type | spoken | typed | spoken / typed |", "|---|---|---|---|---|"]
    for name in ("held_out", "independent_check"):
        part = report[name]
        for kind, value in part["spoken_accuracy_by_type"].items():
            typed = part["typed_accuracy_by_type"].get(kind)
            ratio = part["spoken_over_typed_by_type"].get(kind)
            lines.append(f"| {name} | {kind} | {value:.1%} | {typed:.1%} | {ratio:.2f} |" if ratio is not None
                         else f"| {name} | {kind} | {value:.1%} | {typed} | - |")
        ratio = part["spoken_over_typed"]
        lines.append(f"| {name} | **all** ({part['spoken_questions']}) | {part['spoken_accuracy']:.1%} | {part['typed_accuracy']:.1%} | "
                     f"{ratio:.2f} |" if ratio is not None else f"| {name} | all | - | - | - |")
    lines += ["", "| set | sound question | accuracy |", "|---|---|---|"]
    for name in ("held_out", "independent_check"):
        for kind, value in report[name]["sound_accuracy_by_type"].items():
            lines.append(f"| {name} | {kind} | {value:.1%} |")
    readout = report["held_out"].get("connector_readout")
    if readout and readout["wer"] is not None:
        lines.append(f"\nAudio connector read out word by word, the LLM not run (held out, {readout['clips']} clips): "
                     f"word error rate {readout['wer']:.1%}")
    if "said_wer" in report["held_out"]:
        lines.append(f"\n\"What did I say?\" word error rate (held out, {report['held_out']['said_rows']} clips): "
                     f"{report['held_out']['said_wer']:.1%}")
    return "\n".join(lines)
