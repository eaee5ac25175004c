"""Chat speed on the built-in default model, against plain transformers in the same process.

(a) Decode throughput: our ``Assistant.stream`` vs ``model.generate`` (greedy, same weights, same
    prompt ids, same number of new tokens), tokens per second.
(b) Second-turn time to first token with >= 1k tokens of history (an image in turn 1): prefix reuse
    vs a full re-prefill of the whole conversation.

Prints medians over repeated runs and their ratios. Run: ``python benchmarks/bench_chat.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from assistant import Assistant  # noqa: E402

logger = logging.getLogger("bench_chat")

STORY_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a mysterious map."
HISTORY_DOCUMENT = " ".join(
    f"Section {i}: the quarterly report notes that shipment {i * 7} arrived {i % 5} days late, "
    f"costs rose by {i % 9} percent, and the team proposed {i % 4 + 1} fixes for the warehouse in region {i % 6}."
    for i in range(40)
)


def decode_throughput(bot: Assistant, new_tokens: int, repeats: int) -> tuple[float, float]:
    """Median tokens/s of HF generate and of our stream for exactly ``new_tokens`` greedy tokens."""
    messages = [{"role": "user", "content": STORY_PROMPT}]
    prompt_ids = torch.tensor([bot.prepare(messages).input_ids])
    llm = bot.model.llm
    ours, theirs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.inference_mode():
            output = llm.generate(prompt_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        theirs.append((output.shape[1] - prompt_ids.shape[1]) / (time.perf_counter() - started))

        bot.reset_cache()  # no prefix reuse between repeats: both sides prefill the prompt
        generated = bot.stats.generated_tokens
        started = time.perf_counter()
        reply = bot.chat(messages, max_new_tokens=new_tokens)
        count = bot.stats.generated_tokens - generated
        ours.append(count / (time.perf_counter() - started))
        if count < new_tokens:
            logger.warning("our reply ended after %d tokens (EOS): %r", count, reply[-60:])
    return statistics.median(theirs), statistics.median(ours)


def time_to_first_token(bot: Assistant, messages: list) -> float:
    started = time.perf_counter()
    stream = bot.stream(messages, max_new_tokens=1)
    next(stream, None)
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


def second_turn_ttft(bot: Assistant, image_path: str, repeats: int) -> tuple[int, float, float]:
    """History tokens, and median second-turn TTFT with and without prefix reuse."""
    turn1 = [
        {"role": "system", "content": "You are a concise analyst."},
        {"role": "user", "content": [
            {"type": "image", "image": image_path},
            {"type": "text", "text": HISTORY_DOCUMENT + "\n\nSummarise the report in one sentence."},
        ]},
    ]
    no_reuse = Assistant(bot.model, bot.tokenizer, dataclasses.replace(bot.config, prefix_reuse=False))
    reused, full = [], []
    history_tokens = 0
    for _ in range(repeats):
        for assistant, times in ((bot, reused), (no_reuse, full)):
            assistant.reset_cache()
            reply = assistant.chat(turn1, max_new_tokens=24)
            turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Which region had the most fixes?"}]
            history_tokens = len(assistant.prepare(turn2).input_ids)
            times.append(time_to_first_token(assistant, turn2))
    return history_tokens, statistics.median(reused), statistics.median(full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("torch %s, %d threads", torch.__version__, torch.get_num_threads())
    bot = Assistant.from_pretrained()
    logger.info("model: %s", bot.describe())
    bot.chat([{"role": "user", "content": "Hello"}], max_new_tokens=8)  # warm-up

    hf, ours = decode_throughput(bot, args.new_tokens, args.repeats)
    logger.info("(a) decode, %d greedy tokens, median of %d:", args.new_tokens, args.repeats)
    logger.info("    transformers generate : %6.1f tok/s", hf)
    logger.info("    Assistant.chat/stream : %6.1f tok/s   ratio %.2fx (target >= 1.0x)", ours, ours / hf)

    image_path = "/tmp/bench_chat_image.png"
    Image.new("RGB", (224, 224), (200, 220, 240)).save(image_path)
    tokens, reused, full = second_turn_ttft(bot, image_path, args.repeats)
    logger.info("(b) second-turn time to first token, %d tokens of history, median of %d:", tokens, args.repeats)
    logger.info("    full re-prefill : %7.1f ms", full * 1000)
    logger.info("    prefix reuse    : %7.1f ms   ratio %.3fx (target <= 0.25x)", reused * 1000, reused / full)


if __name__ == "__main__":
    main()
