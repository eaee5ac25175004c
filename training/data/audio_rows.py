"""Audio rows for the default recipe, made offline: spoken questions (espeak-ng) and sounds (numpy).

Three kinds of row, written as typed messages with 16 kHz WAV files under ``audio/``:

- ``spoken_<type>``: a scene picture and its question *spoken* in the same user turn, answered as
  the typed question is (colour, shape, count, position, existence; ``training.data.scene_questions``).
  Voices, speeds and pitches vary and a third of the clips get background noise;
- ``sound_<type>``: a sound made with numpy and a typed question about it: how many beeps, is the
  pitch rising or falling, which of two tones is higher, silence or noise;
- ``said``: "What did I say?" about a spoken sentence, answered with the sentence.

Every audio part carries ``transcript``: the words spoken, or the sound's words ("one two three" for
three beeps, "rising", "low high", "silence", "noise"), the target of audio alignment
(``training.audio_alignment``). Beeps are counted aloud, one number word per beep, so the count is the
last word the connector spells; a word repeated per beep ("ping ping ping") was read back near-perfectly
by the connector (WER 1%) but the LLM counted its tokens, not its beeps (54% right).
``{split}_typed.jsonl`` repeats each spoken question typed, so spoken and typed accuracy are
measured on the same questions (``training.evaluate --task audio``). Splits use disjoint scenes
and seeds. Needs the ``espeak-ng`` program (Debian package ``espeak-ng``).

    python -m training.data.audio_rows --scenes runs/default/data --out runs/default/data --train 1200
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from assistant.audio import SAMPLE_RATE, resample

logger = logging.getLogger(__name__)

AUDIO_DIR = "audio"
VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-gb+m1", "en-gb+f3", "en-us+m5", "en+f4", "en-us+m2")
SPEEDS = (125, 200)  # words per minute
PITCHES = (25, 75)
NOISE_SHARE = 1 / 3
SPOKEN_TYPES = ("colour", "shape", "count", "position", "existence")
SOUND_TYPES = ("beeps", "pitch", "higher", "silence")
# Training sounds in turn: counting beeps and comparing two tones get twice the rows of rising/falling pitch and
# silence/noise, which were right every time with equal shares (runs/default_v3). Test splits use SOUND_TYPES.
TRAIN_SOUND_MIX = ("beeps", "higher", "pitch", "beeps", "higher", "silence")
# Training spoken questions in turn: count and existence, the two kinds whose spoken accuracy fell most below the
# typed one with equal shares (runs/default_v6: 0.90x and 0.89x), get twice the rows of the others.
TRAIN_SPOKEN_MIX = ("colour", "count", "shape", "existence", "position", "count", "existence")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SOUND_QUESTIONS = {
    "beeps": ("How many beeps are there?", "How many beeps do you hear?", "Count the beeps."),
    "pitch": ("Is the pitch rising or falling?", "Does this tone rise or fall?"),
    "higher": ("Which tone is higher, the first or the second?", "Which of the two tones is higher?"),
    "silence": ("Is this silence or noise?", "Do you hear noise or silence?"),
}
SAID_PROMPTS = ("What did I say?", "Repeat what I said.", "What did I just say?")
SENTENCES = (
    "The weather is lovely today.", "Please turn on the kitchen lights.", "I would like a cup of tea.",
    "The meeting starts at nine tomorrow.", "My favourite colour is green.", "Open the window, please.",
    "We are going to the beach on Sunday.", "The cat is sleeping on the sofa.", "Call me when you get home.",
    "This train goes to the city centre.", "I lost my keys again.", "Dinner will be ready soon.",
    "The library closes at six.", "Can you help me with my homework?", "It is raining outside.",
    "She plays the piano every evening.", "Put the red box on the table.", "I need three apples and a lemon.",
    "The blue car is parked outside.", "Let us meet at the station.",
)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 16 kHz mono float32 samples."""
    if not have_espeak():
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    result = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text],
        capture_output=True, timeout=60, check=True,
    )
    with wave.open(io.BytesIO(result.stdout)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return resample(samples, rate) if rate != SAMPLE_RATE else samples


def add_noise(samples: np.ndarray, rng: random.Random, snr_db: float) -> np.ndarray:
    """``samples`` with white noise at ``snr_db`` below the speech's power."""
    power = float(np.mean(samples**2)) or 1e-8
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
    return (samples + noise).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm.tobytes())


def spoken(text: str, rng: random.Random, voices: Sequence[str] = VOICES) -> np.ndarray:
    """``text`` in a random voice, speed and pitch, with background noise a third of the time."""
    samples = speak(text, rng.choice(voices), rng.randint(*SPEEDS), rng.randint(*PITCHES))
    if rng.random() < NOISE_SHARE:
        samples = add_noise(samples, rng, rng.uniform(10.0, 25.0))
    return samples


# ---------------------------------------------------------------------------------------------- sounds


def _tone(frequency: float | np.ndarray, seconds: float, amplitude: float) -> np.ndarray:
    """A sine tone (a fixed frequency or one per sample), with 10-ms fades so it starts and ends cleanly."""
    count = int(seconds * SAMPLE_RATE)
    frequency = np.broadcast_to(np.asarray(frequency, dtype=np.float64), (count,))
    wave_ = amplitude * np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE)
    fade = min(int(0.01 * SAMPLE_RATE), count // 2)
    envelope = np.ones(count)
    envelope[:fade], envelope[count - fade :] = np.linspace(0, 1, fade), np.linspace(1, 0, fade)
    return (wave_ * envelope).astype(np.float32)


def _gap(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def _floor(samples: np.ndarray, rng: random.Random, level: float = 0.002) -> np.ndarray:
    """A quiet room-noise floor under a sound, as a microphone records."""
    return samples + np.random.default_rng(rng.getrandbits(32)).normal(0, level, samples.shape).astype(np.float32)


def sound(kind: str, rng: random.Random) -> tuple[np.ndarray, str, str]:
    """A ``kind`` sound: (samples, answer, transcript)."""
    if kind == "beeps":
        count = rng.randint(1, 5)
        frequency, pieces = rng.uniform(500, 1500), [_gap(rng.uniform(0.2, 0.5))]
        for _ in range(count):
            pieces += [_tone(frequency, rng.uniform(0.12, 0.25), rng.uniform(0.3, 0.6)), _gap(rng.uniform(0.2, 0.4))]
        return _floor(np.concatenate(pieces), rng), str(count), " ".join(NUMBER_WORDS[1 : count + 1])
    if kind == "pitch":
        rising = rng.random() < 0.5
        low, high, seconds = rng.uniform(250, 600), rng.uniform(900, 1800), rng.uniform(0.8, 2.0)
        sweep = np.geomspace(low, high, int(seconds * SAMPLE_RATE)) if rising else np.geomspace(high, low, int(seconds * SAMPLE_RATE))
        samples = np.concatenate([_gap(0.2), _tone(sweep, seconds, rng.uniform(0.3, 0.6)), _gap(0.2)])
        word = "rising" if rising else "falling"
        return _floor(samples, rng), word, word
    if kind == "higher":
        low = rng.uniform(250, 600)
        high = low * rng.uniform(1.5, 2.5)
        first_higher = rng.random() < 0.5
        tones = (high, low) if first_higher else (low, high)
        samples = np.concatenate([
            _gap(0.2), _tone(tones[0], rng.uniform(0.4, 0.7), 0.5), _gap(rng.uniform(0.2, 0.4)),
            _tone(tones[1], rng.uniform(0.4, 0.7), 0.5), _gap(0.2),
        ])
        return _floor(samples, rng), "first" if first_higher else "second", "high low" if first_higher else "low high"
    if kind == "silence":
        seconds, noisy = rng.uniform(1.0, 3.0), rng.random() < 0.5
        level = rng.uniform(0.05, 0.3) if noisy else rng.uniform(0.001, 0.003)  # noise, or a quiet room (about -55 dBFS)
        samples = np.random.default_rng(rng.getrandbits(32)).normal(0, level, int(seconds * SAMPLE_RATE)).astype(np.float32)
        word = "noise" if noisy else "silence"
        return samples, word, word
    raise ValueError(f"unknown sound kind {kind!r}; expected one of {SOUND_TYPES}")


# ---------------------------------------------------------------------------------------------- rows


def _audio_part(path: str, transcript: str) -> dict[str, Any]:
    return {"type": "audio", "audio": path, "transcript": transcript}


def _row(row_id: str, kind: str, content: list[dict[str, Any]], answer: str) -> dict[str, Any]:
    return {
        "id": row_id, "question_type": kind,
        "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
    }


def scene_questions_of(scenes_root: Path, split: str, limit: int, seed: int, per_scene: int = 1,
                       mix: Sequence[str] = SPOKEN_TYPES) -> list[tuple[str, Any]]:
    """Up to ``limit`` (image path, QA) pairs from a scene split's records: one spoken-type question per scene,
    the types of ``mix`` in turn, or with ``per_scene`` > 1 that many of its types (a split with few scenes, such
    as test)."""
    from training.data.scene_layout import Scene, SceneObject
    from training.data.scene_questions import questions

    canvas_size = json.loads((scenes_root / "summary.json").read_text())["scene"]["canvas_size"]
    records = [json.loads(line) for line in (scenes_root / f"{split}_scenes.jsonl").read_text().splitlines() if line.strip()]
    pairs: list[tuple[str, Any]] = []
    for index, record in enumerate(records[:limit]):
        objects = tuple(SceneObject(**{**obj, "bbox": tuple(obj["bbox"])}) for obj in record["objects"])
        scene = Scene(objects, tuple(record["background"]), canvas_size)
        rng = random.Random(f"spoken/{seed}/{split}/{index}")
        found = {qa.question_type: qa for qa in questions(scene, rng) if qa.question_type in SPOKEN_TYPES}
        if per_scene > 1:
            pairs += [(record["image"], qa) for qa in list(found.values())[:per_scene]]
            continue
        wanted = mix[index % len(mix)]
        qa = found.get(wanted) or next(iter(found.values()))
        pairs.append((record["image"], qa))
    return pairs[:limit]


def build_audio_split(
    out: Path, scenes_root: Path, split: str, spoken_rows: int, sound_rows: int, said_rows: int, seed: int = 0,
    per_scene: int = 1, sound_mix: Sequence[str] = SOUND_TYPES, spoken_mix: Sequence[str] = SPOKEN_TYPES,
) -> dict[str, int]:
    """Write ``{split}_audio.jsonl`` (spoken, sound and said rows) and ``{split}_typed.jsonl``; returns counts.
    Spoken questions take the kinds of ``spoken_mix`` in turn, sound rows those of ``sound_mix``."""
    rng = random.Random(f"audio/{seed}/{split}")
    rows, typed, counts = [], [], {}
    image_prefix = Path(os.path.relpath(scenes_root, out))
    pairs = scene_questions_of(scenes_root, split, spoken_rows, seed, per_scene, spoken_mix)
    for index, (image, qa) in enumerate(tqdm(pairs, desc=f"{split} spoken", unit="clip", leave=False)):
        name = f"{AUDIO_DIR}/{split}_spoken_{index:05d}.wav"
        write_wav(out / name, spoken(qa.question, rng))
        picture = {"type": "image", "image": str(image_prefix / image)}
        rows.append(_row(f"{split}_spoken_{index:05d}", f"spoken_{qa.question_type}", [picture, _audio_part(name, qa.question)], qa.answer))
        typed.append(_row(f"{split}_typed_{index:05d}", f"typed_{qa.question_type}", [picture, {"type": "text", "text": qa.question}], qa.answer))
    for index in tqdm(range(sound_rows), desc=f"{split} sounds", unit="clip", leave=False):
        kind = sound_mix[index % len(sound_mix)]
        samples, answer, transcript = sound(kind, rng)
        name = f"{AUDIO_DIR}/{split}_sound_{index:05d}.wav"
        write_wav(out / name, samples)
        question = {"type": "text", "text": rng.choice(SOUND_QUESTIONS[kind])}
        rows.append(_row(f"{split}_sound_{index:05d}", f"sound_{kind}", [_audio_part(name, transcript), question], answer))
    for index in tqdm(range(said_rows), desc=f"{split} said", unit="clip", leave=False):
        sentence = SENTENCES[rng.randrange(len(SENTENCES))] if rng.random() < 0.5 else pairs[rng.randrange(len(pairs))][1].question
        name = f"{AUDIO_DIR}/{split}_said_{index:05d}.wav"
        write_wav(out / name, spoken(sentence, rng))
        prompt = {"type": "text", "text": rng.choice(SAID_PROMPTS)}
        rows.append(_row(f"{split}_said_{index:05d}", "said", [_audio_part(name, sentence), prompt], sentence))
    for kind in ("spoken", "sound", "said"):
        counts[kind] = sum(row["id"].startswith(f"{split}_{kind}") for row in rows)
    with open(out / f"{split}_audio.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    with open(out / f"{split}_typed.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in typed)
    return counts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m training.data.audio_rows", description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", required=True, help="folder of a scene dataset (training.data.scenes) whose pictures the questions ask about")
    parser.add_argument("--out", required=True, help="where audio/ and the row files go")
    parser.add_argument("--train", type=int, default=1200, help="spoken-question rows in train (as many sound rows, a third as many said rows)")
    parser.add_argument("--test", type=int, default=300, help="spoken-question rows in test (up to one per type and scene)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, scenes = Path(args.out), Path(args.scenes)
    summary = {
        "train": build_audio_split(out, scenes, "train", args.train, args.train, args.train // 3, args.seed,
                                    sound_mix=TRAIN_SOUND_MIX, spoken_mix=TRAIN_SPOKEN_MIX),
        "test": build_audio_split(out, scenes, "test", args.test, 200, 40, args.seed, per_scene=len(SPOKEN_TYPES)),
    }
    (out / "audio_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("audio rows: %s", summary)
    return summary


if __name__ == "__main__":
    main()
