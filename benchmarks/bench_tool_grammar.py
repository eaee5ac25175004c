"""What constrained tool-call decoding costs per generated token, on the built-in default model.

    python benchmarks/bench_tool_grammar.py [--repeats 5]

Runs the same forced tool call (``tool_choice="calculator"``) on the shipped default assistant with
the xgrammar constraint on and off, and reports: grammar compile time (first and cached), the time
spent in the constraint per token (mask + accept, median), end-to-end decode tok/s with and without
it, and their ratio. When llguidance is importable, the same call's tokens are replayed through an
llguidance matcher built from the same JSON schema for comparison (first-mask and per-token times).
Medians over ``--repeats``; this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from assistant import Assistant  # noqa: E402
from assistant.generation import SamplingOptions  # noqa: E402
from assistant.tools import tool_spec  # noqa: E402
from assistant.tools.grammar import bounded_specs  # noqa: E402
from assistant.tools.spec import parse_tool_choice  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 12 times 7, plus 3?"}]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 2*(3+4)"}},
                       "required": ["expression"]},
    },
}


class TimedConstraint:
    """Wraps a grammar constraint and records the seconds spent in it per token."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def mask(self, logits):
        started = time.perf_counter()
        masked = self.inner.mask(logits)
        self.seconds.append(time.perf_counter() - started)
        return masked

    def accept(self, token: int) -> None:
        started = time.perf_counter()
        self.inner.accept(token)
        self.seconds[-1] += time.perf_counter() - started


def forced_tag(bot: Assistant, spec) -> dict:
    """The structural tag the assistant builds for ``tool_choice="calculator"`` (values bounded as it bounds them)."""
    bounded = bounded_specs([spec], bot.config.tools.max_string_chars, bot.config.tools.max_array_items)
    return bot.prompt_builder.tool_format.structural_tag(bounded, parse_tool_choice("calculator", [spec]), False)


def decode_once(bot: Assistant, constrained: bool, max_new_tokens: int) -> tuple[float, int, list[float], list[int]]:
    """(tok/s, tokens, constraint seconds per token, generated ids) for one forced call."""
    spec = tool_spec(CALCULATOR)
    tag = forced_tag(bot, spec)
    constraint = TimedConstraint(bot._grammars.constraint(tag)) if constrained else None
    bot.reset_cache()
    prompt = bot.prepare(QUESTION, max_new_tokens, [spec])
    keys = prompt.position_keys()
    ids, first = [], None
    for token in bot._engine.submit(keys, lambda start: bot._embed_suffix(prompt, start), SamplingOptions(max_new_tokens),
                                      threading.Event(), constraint=constraint):
        if first is None:
            first = time.perf_counter()
        ids.append(token)
    elapsed = time.perf_counter() - first
    return (len(ids) - 1) / elapsed, len(ids), (constraint.seconds if constraint else []), ids


def llguidance_replay(bot: Assistant, ids: list[int]) -> tuple[float, float] | None:
    """(first mask s, median per-token s) replaying ``ids`` through llguidance, or None if not installed."""
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch as lltorch
    except ImportError:
        return None
    vocab = bot.model.llm.get_output_embeddings().weight.shape[0]
    tokenizer = llguidance.hf.from_tokenizer(bot.tokenizer, n_vocab=vocab)
    prefix = bot.prompt_builder.tool_format.call_prefix("calculator")
    schema = json.dumps(CALCULATOR["function"]["parameters"])
    lark = f"start: {json.dumps(prefix)} args {json.dumps(chr(125) + chr(10) + '</tool_call>')}\nargs: %json {schema}\n"
    matcher = llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(lark))
    bitmask = lltorch.allocate_token_bitmask(1, vocab)
    seconds = []
    for token in ids:
        logits = torch.zeros(1, vocab)
        started = time.perf_counter()
        lltorch.fill_next_token_bitmask(matcher, bitmask, 0)
        lltorch.apply_token_bitmask_inplace(logits, bitmask)
        if token in bot._stop_ids:
            seconds.append(time.perf_counter() - started)
            break
        matcher.consume_token(token)
        seconds.append(time.perf_counter() - started)
    return seconds[0], statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    bot = Assistant.from_pretrained()
    spec = tool_spec(CALCULATOR)
    tag = forced_tag(bot, spec)
    started = time.perf_counter()
    bot._grammars.constraint(tag)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    bot._grammars.constraint(tag)
    cached_s = time.perf_counter() - started
    decode_once(bot, True, 8)  # warm-up
    constrained, free, per_token, ids = [], [], [], []
    for _ in range(args.repeats):
        rate, _, seconds, ids = decode_once(bot, True, args.max_new_tokens)
        constrained.append(rate)
        per_token += seconds
        free.append(decode_once(bot, False, len(ids))[0])
    call = bot.tokenizer.decode(ids, skip_special_tokens=True)
    print(f"forced call written by the default model ({len(ids)} tokens): {call!r}")
    print(f"grammar compile: {compile_s * 1000:.0f} ms first, {cached_s * 1000:.2f} ms cached")
    print(f"xgrammar mask + accept per token: median {statistics.median(per_token) * 1000:.3f} ms "
          f"(p90 {sorted(per_token)[int(0.9 * len(per_token))] * 1000:.3f} ms) over {len(per_token)} tokens")
    rate_on, rate_off = statistics.median(constrained), statistics.median(free)
    print(f"decode tok/s, median of {args.repeats}: constrained {rate_on:.1f}, unconstrained {rate_off:.1f} "
          f"(ratio {rate_on / rate_off:.3f}; per-token overhead {(1 / rate_on - 1 / rate_off) * 1000:.2f} ms)")
    replay = llguidance_replay(bot, ids)
    if replay is None:
        print("llguidance: not installed (pip install llguidance), comparison skipped")
    else:
        print(f"llguidance on the same tokens: first mask {replay[0] * 1000:.1f} ms, then median {replay[1] * 1000:.3f} ms per token")


if __name__ == "__main__":
    main()
