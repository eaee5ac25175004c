"""Serving many streams at once on the built-in default, against serving the same requests one by one.

For 1, 4 and 16 concurrent streams: aggregate tokens/s and p50/p95 time to first token (from the
moment the requests are sent), then the same requests served serially (each waits for the one
before it; its time to first token counts from its own start). Greedy decoding, a fixed number of
new tokens per request, KV prefix cache emptied before every run so each run prefills its prompts.

    python benchmarks/bench_serving.py              # the Python API, threads on one Assistant
    python benchmarks/bench_serving.py --http       # through the OpenAI-compatible server (openai client)

Prints medians over ``--repeats`` runs and the concurrent/serial throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant import Assistant  # noqa: E402
from assistant.tools.events import AssistantTurn, TextDelta  # noqa: E402

logger = logging.getLogger("bench_serving")

TOPICS = ["a lighthouse keeper", "a lost robot", "a dragon who bakes bread", "a city under the sea", "a talking cat",
          "the first day of school", "a journey to Mars", "a haunted library", "a clockmaker", "a desert caravan",
          "a tiny island", "a winter festival", "a broken violin", "a forest of glass", "a river that flows uphill",
          "a train that never stops"]


@dataclass
class Outcome:
    ttft_s: float  # from when the request was sent
    tokens: int


def requests(count: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}] for i in range(count)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ---------------------------------------------------------------- clients


def api_one(bot: Assistant, messages: list[dict], new_tokens: int, sent: float) -> Outcome:
    first, tokens = None, 0
    for event in bot.stream_events(messages, max_new_tokens=new_tokens):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, AssistantTurn):
            tokens = event.completion_tokens
    return Outcome((first or time.perf_counter()) - sent, tokens)


def api_together(bot: Assistant, batch: list[list[dict]], new_tokens: int) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(batch)
    sent = time.perf_counter()

    def work(index: int) -> None:
        outcomes[index] = api_one(bot, batch[index], new_tokens, sent)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batch))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


async def http_one(client, model: str, messages: list[dict], new_tokens: int, sent: float) -> Outcome:
    first, tokens = None, 0
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=new_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Outcome((first or time.perf_counter()) - sent, tokens)


def http_runner(base_url: str, model: str):
    from openai import AsyncOpenAI

    def together(batch: list[list[dict]], new_tokens: int) -> list[Outcome]:
        async def run() -> list[Outcome]:
            async with AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
                sent = time.perf_counter()
                return await asyncio.gather(*(http_one(client, model, m, new_tokens, sent) for m in batch))

        return asyncio.run(run())

    return together


# ---------------------------------------------------------------- measurement


def measure(together, reset, batch: list[list[dict]], new_tokens: int, repeats: int) -> dict[str, float]:
    concurrent_rate, serial_rate, p50, p95, serial_p50 = [], [], [], [], []
    for _ in range(repeats):
        reset()
        started = time.perf_counter()
        outcomes = together(batch, new_tokens)
        elapsed = time.perf_counter() - started
        concurrent_rate.append(sum(o.tokens for o in outcomes) / elapsed)
        ttfts = [o.ttft_s for o in outcomes]
        p50.append(percentile(ttfts, 0.5))
        p95.append(percentile(ttfts, 0.95))

        reset()
        started = time.perf_counter()
        serial = [together([messages], new_tokens)[0] for messages in batch]
        serial_rate.append(sum(o.tokens for o in serial) / (time.perf_counter() - started))
        serial_p50.append(percentile([o.ttft_s for o in serial], 0.5))
    return {
        "tok_s": statistics.median(concurrent_rate), "ttft_p50": statistics.median(p50), "ttft_p95": statistics.median(p95),
        "serial_tok_s": statistics.median(serial_rate), "serial_ttft_p50": statistics.median(serial_p50),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", help="adapter artifact folder (default: built-in)")
    parser.add_argument("--levels", default="1,4,16", help="concurrent streams to measure")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--http", action="store_true", help="go through the OpenAI-compatible server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bot = Assistant.from_pretrained(args.adapter)
    bot.chat([{"role": "user", "content": "Hello"}], max_new_tokens=4)  # warm-up
    with ExitStack() as stack:
        if args.http:
            from assistant.serving.app import create_app
            from assistant.serving.background import serve_in_thread
            from assistant.serving.config import ServerConfig

            config = ServerConfig()
            url = stack.enter_context(serve_in_thread(create_app(bot, config)))
            together = http_runner(f"{url}/v1", config.served_model_name)
        else:
            def together(batch, new_tokens):
                return api_together(bot, batch, new_tokens)

        report(bot, together, args)


def report(bot: Assistant, together, args: argparse.Namespace) -> None:
    path = "HTTP server + openai client" if args.http else "Python API, one thread per stream"
    print(f"serving benchmark ({path}); {args.new_tokens} new tokens per request, greedy, medians of {args.repeats}")
    print(f"{'streams':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} | {'serial tok/s':>12} {'serial TTFT p50':>15} | ratio")
    for level in [int(x) for x in args.levels.split(",")]:
        bot._engine.peak_batch = 0
        row = measure(together, bot.reset_cache, requests(level), args.new_tokens, args.repeats)
        print(f"{level:>7} {row['tok_s']:>8.1f} {row['ttft_p50']:>8.2f}s {row['ttft_p95']:>8.2f}s | "
              f"{row['serial_tok_s']:>12.1f} {row['serial_ttft_p50']:>14.2f}s | {row['tok_s'] / row['serial_tok_s']:.2f}x"
              f"  (peak batch {bot._engine.peak_batch})")


if __name__ == "__main__":
    main()
