"""An audio check written apart from the training generator (``training.data.audio_rows``).

It shares no template, voice or synthesis routine with the training rows, so a model that only
learnt the generator's habits scores lower here:

- spoken questions in other words ("Can you count the squares for me?", "Tell me the colour of the
  star.", "Do you see a green circle?"), zero counts included, in three espeak-ng voices the training
  rows never use, at speeds and pitches outside the training range; each also asked typed, so spoken
  and typed accuracy are compared on the same questions;
- sounds made another way: square-wave beeps (0 to 6 of them, none = a quiet room), linear
  frequency sweeps, two tones only 1.3-1.5x apart, and pink noise against a quieter room.

Answers are computed from each scene's objects here, not by ``training.data.scene_questions``.
Rows are built in memory for ``training.evaluate --task audio`` (the clips as ``(rate, samples)``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from assistant.audio import SAMPLE_RATE
from training.data.audio_rows import speak
from training.data.rows import Row

CHECK_VOICES = ("en-us+m7", "en-gb+f4", "en+m6")
CHECK_SPEEDS = ((105, 120), (205, 230))
CHECK_PITCHES = ((10, 24), (76, 90))
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "black", "white")


def _voice(rng: random.Random) -> tuple[str, int, int]:
    return rng.choice(CHECK_VOICES), rng.randint(*rng.choice(CHECK_SPEEDS)), rng.randint(*rng.choice(CHECK_PITCHES))


def _questions(objects: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, str, str]]:
    """(type, question, answer) about one scene, in wording of this module's own."""
    shapes = [obj["shape"] for obj in objects]
    asked = rng.choice(SHAPES)
    found = [(
        "count", rng.choice(["Can you count the {}s for me?", "How many {}s can you see?", "Tell me the number of {}s."]).format(asked),
        str(shapes.count(asked)),
    )]
    unique = [obj for obj in objects if shapes.count(obj["shape"]) == 1]
    if unique:
        obj = rng.choice(unique)
        found.append(("colour", rng.choice(["Tell me the colour of the {}.", "Which colour does the {} have?"]).format(obj["shape"]), obj["colour"]))
    colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
    present = any(obj["colour"] == colour and obj["shape"] == shape for obj in objects)
    found.append(("existence", rng.choice(["Do you see a {} {}?", "Is a {} {} anywhere in the picture?"]).format(colour, shape),
                  "yes" if present else "no"))
    return found


def spoken_check(scenes_root: Path, split: str = "test", scenes: int = 60, seed: int = 7) -> tuple[list[Row], list[Row]]:
    """(spoken rows, the same questions typed) about ``scenes`` held-out scenes of a scene dataset."""
    rng = random.Random(f"audio-check/{seed}")
    records = [json.loads(line) for line in (scenes_root / f"{split}_scenes.jsonl").read_text().splitlines() if line.strip()]
    spoken, typed = [], []
    for index, record in enumerate(records[:scenes]):
        picture = {"type": "image", "image": str(scenes_root / record["image"])}
        for kind, question, answer in _questions(record["objects"], rng):
            voice, speed, pitch = _voice(rng)
            clip = (SAMPLE_RATE, speak(question, voice, speed, pitch))
            reply = [{"role": "assistant", "content": answer}]
            spoken.append(Row(f"check_{index}_{kind}", [{"role": "user", "content": [picture, {"type": "audio", "audio": clip}]}] + reply,
                              f"spoken_{kind}"))
            typed.append(Row(f"check_{index}_{kind}_typed", [{"role": "user", "content": [picture, {"type": "text", "text": question}]}] + reply,
                             f"typed_{kind}"))
    return spoken, typed


def _room(seconds: float, generator: np.random.Generator, level: float = 0.0008) -> np.ndarray:
    return generator.normal(0, level, int(seconds * SAMPLE_RATE)).astype(np.float32)


def _square(frequency: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sign(np.sin(2 * np.pi * frequency * t))).astype(np.float32)


def _sound(kind: str, rng: random.Random, generator: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """(samples, question, answer) of one check sound."""
    if kind == "beeps":
        count, frequency, clip = rng.randint(0, 6), rng.uniform(200, 2500), [_room(0.3, generator)]
        for _ in range(count):
            clip += [_square(frequency, rng.uniform(0.08, 0.3), rng.uniform(0.1, 0.4)), _room(rng.uniform(0.15, 0.5), generator)]
        clip.append(_room(0.5, generator))
        return np.concatenate(clip), rng.choice(["How many beeps can you count?", "Tell me how many beeps there are."]), str(count)
    if kind == "pitch":
        rising, seconds = rng.random() < 0.5, rng.uniform(0.6, 2.5)
        start, end = sorted((rng.uniform(200, 700), rng.uniform(1000, 2500)))
        frequency = np.linspace(start, end, int(seconds * SAMPLE_RATE)) if rising else np.linspace(end, start, int(seconds * SAMPLE_RATE))
        sweep = 0.4 * np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE).astype(np.float32)
        clip = np.concatenate([_room(0.3, generator), sweep, _room(0.3, generator)])
        return clip, rng.choice(["Does the pitch go up or down? Say rising or falling.", "Rising or falling pitch?"]), "rising" if rising else "falling"
    if kind == "higher":
        low = rng.uniform(300, 800)
        pair = (low * rng.uniform(1.3, 1.5), low) if rng.random() < 0.5 else (low, low * rng.uniform(1.3, 1.5))
        tones = [_square(f, rng.uniform(0.3, 0.8), 0.25) for f in pair]
        clip = np.concatenate([_room(0.2, generator), tones[0], _room(0.3, generator), tones[1], _room(0.2, generator)])
        return clip, rng.choice(["Is the first or the second tone higher?", "Which one is higher: first or second?"]), "first" if pair[0] > pair[1] else "second"
    noisy, seconds = rng.random() < 0.5, rng.uniform(0.8, 4.0)
    if noisy:  # pink noise: white noise with a 1/f spectrum
        spectrum = np.fft.rfft(generator.normal(0, 1, int(seconds * SAMPLE_RATE)))
        spectrum /= np.sqrt(np.arange(1, len(spectrum) + 1))
        clip = np.fft.irfft(spectrum).astype(np.float32)
        clip *= rng.uniform(0.05, 0.25) / (np.abs(clip).max() + 1e-9)
    else:
        clip = _room(seconds, generator, rng.uniform(0.0004, 0.0012))
    return clip, rng.choice(["Noise or silence?", "Is there noise, or is it silent?"]), "noise" if noisy else "silence"


def sound_check(per_type: int = 30, seed: int = 7) -> list[Row]:
    rng, generator = random.Random(f"sound-check/{seed}"), np.random.default_rng(seed)
    rows = []
    for kind in ("beeps", "pitch", "higher", "silence"):
        for index in range(per_type):
            samples, question, answer = _sound(kind, rng, generator)
            content = [{"type": "audio", "audio": (SAMPLE_RATE, samples)}, {"type": "text", "text": question}]
            rows.append(Row(f"check_sound_{kind}_{index}", [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
                            f"sound_{kind}"))
    return rows
