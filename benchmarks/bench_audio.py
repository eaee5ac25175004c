"""Audio costs on an assistant with an audio encoder (the built-in default, or ``--adapter``).

(a) LLM tokens per second of audio (the connector's rate), and the Whisper encoder's time per clip
    for 2-s, 5-s and 31-s clips, each window encoded at its real length (``pad_to_window`` off, the
    default) vs padded to 30 s as Whisper was trained (the baseline), with the ratio.
(b) Time to first token for a 5-s spoken question with a picture vs the same question typed, as a
    first turn: cold (the clip and the picture encoded, then prefilled) and with both already in
    the encoder cache (the conversation's KV cache dropped, so the prompt is prefilled again).

Prints medians over repeated runs. Needs espeak-ng for the spoken question.
Run: ``python benchmarks/bench_audio.py [--adapter DIR] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from assistant import Assistant  # noqa: E402
from assistant.audio import SAMPLE_RATE, clip_from_samples  # noqa: E402
from assistant.config import MediaConfig  # noqa: E402

logger = logging.getLogger("bench_audio")

QUESTION = "How many circles are there in this picture, and what colour is the largest one?"
PICTURE = Path(__file__).resolve().parents[1] / "examples" / "scene_1.png"


def five_second_question() -> np.ndarray:
    """The question spoken slowly by espeak-ng, cut or padded with room noise to exactly 5 s."""
    from training.data.audio_rows import speak

    samples = speak(QUESTION, "en-us", 125, 50)[: 5 * SAMPLE_RATE]
    tail = np.random.default_rng(0).normal(0, 0.002, 5 * SAMPLE_RATE - len(samples)).astype(np.float32)
    return np.concatenate([samples, tail])


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def encoder_costs(bot: Assistant, repeats: int) -> None:
    encoder = bot.model.encoders["audio"]
    rate = bot.model.tokens_for_samples("audio", 100 * SAMPLE_RATE) / 100
    print(f"audio tokens per second of audio: {rate:g} ({encoder.description})")
    padded_before = encoder.pad_to_window
    rng = np.random.default_rng(1)
    print("| clip | real length (ours) | padded to 30 s (baseline) | speed-up |")
    print("|---|---|---|---|")
    for seconds in (2, 5, 31):
        clip = clip_from_samples(rng.normal(0, 0.1, seconds * SAMPLE_RATE).astype(np.float32), "noise", MediaConfig())
        times = {}
        for padded in (False, True):
            encoder.pad_to_window = padded
            encoder.encode_frame(clip)  # warm-up
            times[padded] = median_seconds(lambda: encoder.encode_frame(clip), repeats)
        print(f"| {seconds} s | {times[False] * 1000:.0f} ms | {times[True] * 1000:.0f} ms | {times[True] / times[False]:.1f}x |")
    encoder.pad_to_window = padded_before


def first_token(bot: Assistant, messages: list, cold: bool) -> float:
    bot.reset_cache(media=cold)
    stream = bot.stream(messages, max_new_tokens=1)
    started = time.perf_counter()
    next(iter(stream), None)
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


def time_to_first_token(bot: Assistant, repeats: int) -> None:
    clip = (SAMPLE_RATE, five_second_question())
    spoken = [{"role": "user", "content": [{"type": "image", "image": str(PICTURE)}, {"type": "audio", "audio": clip}]}]
    typed = [{"role": "user", "content": [{"type": "image", "image": str(PICTURE)}, {"type": "text", "text": QUESTION}]}]
    lengths = {name: len(bot.prepare(messages).input_ids) for name, messages in (("spoken", spoken), ("typed", typed))}
    print(f"\nprompt tokens: spoken {lengths['spoken']}, typed {lengths['typed']} (a 5-s clip and a picture)")
    print("| first turn | spoken (5 s) | typed | spoken / typed |")
    print("|---|---|---|---|")
    for cold in (True, False):
        first_token(bot, spoken, cold), first_token(bot, typed, cold)  # warm-up
        results = {name: statistics.median(first_token(bot, messages, cold) for _ in range(repeats))
                   for name, messages in (("spoken", spoken), ("typed", typed))}
        label = "cold (media encoded)" if cold else "media in the encoder cache"
        print(f"| {label} | {results['spoken'] * 1000:.0f} ms | {results['typed'] * 1000:.0f} ms | "
              f"{results['spoken'] / results['typed']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", default=None, help="assistant artifact with an audio encoder (default: the built-in one)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bot = Assistant.from_pretrained(args.adapter)
    if "audio" not in bot.supported_media:
        raise SystemExit(f"{args.adapter or 'the built-in default'} has no audio encoder")
    encoder_costs(bot, args.repeats)
    time_to_first_token(bot, args.repeats)


if __name__ == "__main__":
    main()
