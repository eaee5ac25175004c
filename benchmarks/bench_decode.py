"""Decode speed of the built-in default on this machine: each serving mode against plain transformers.

One run, one process, the same prompt ids and the same number of greedy tokens everywhere:

- transformers ``generate`` on the eager model (peft LoRA unmerged, float32);
- our ``Assistant.chat`` with each serving mode of ``assistant.llm_serving`` (eager, merged, bf16, int8,
  and llama_cpp once per ``--gguf-types`` entry), and whether its greedy text equals the eager one;
- llama.cpp (``llama_cpp``) on the packaged GGUF file when it is importable (base weights: the GGUF has
  no LoRA), else a line saying it was skipped;
- with ``--text-prompts``: each mode's greedy replies to the 32 text prompts of
  ``training.text_regression`` against the eager ones, the prompts whose reply differs listed;
- with ``--compiled``: transformers ``generate`` on the merged float32 and the int8 serving copies with a
  static cache of one size and the decode step compiled by ``torch.compile`` (inductor; transformers compiles only on
  accelerators unless told to, so it is told to), with the compile time and the graphs compiled again
  for a second, longer conversation (0: growing conversations do not recompile).

Prints medians over ``--repeats`` runs and ratios. Run: ``python benchmarks/bench_decode.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from assistant import Assistant  # noqa: E402
from assistant.config import GGUF_TYPES, SERVING_MODES, EngineConfig  # noqa: E402

logger = logging.getLogger("bench_decode")
STATIC_CACHE_LEN = 1024  # one cache shape for every conversation, so a longer one does not recompile
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a mysterious map."


def ours(bot: Assistant, new_tokens: int, repeats: int) -> tuple[float, str]:
    """Median tokens/s of ``Assistant.chat`` for ``new_tokens`` greedy tokens (no prefix reuse), and the text."""
    messages = [{"role": "user", "content": PROMPT}]
    speeds, text = [], ""
    for _ in range(repeats):
        bot.reset_cache()
        before = bot.stats.generated_tokens
        started = time.perf_counter()
        text = bot.chat(messages, max_new_tokens=new_tokens)
        speeds.append((bot.stats.generated_tokens - before) / (time.perf_counter() - started))
    return statistics.median(speeds), text


def transformers_generate(bot: Assistant, new_tokens: int, repeats: int) -> float:
    ids = torch.tensor([bot.prepare([{"role": "user", "content": PROMPT}]).input_ids])
    speeds = []
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.inference_mode():
            out = bot.model.llm.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        speeds.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - started))
    return statistics.median(speeds)


def llama_cpp(bot: Assistant, new_tokens: int, repeats: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from assistant.llm import resolve_source

    gguf = resolve_source(bot.config.llm.model)
    if not gguf.endswith(".gguf"):
        return None
    engine = Llama(model_path=gguf, n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False)
    ids = bot.prepare([{"role": "user", "content": PROMPT}]).input_ids
    speeds = []
    for _ in range(repeats):
        engine.reset()
        started = time.perf_counter()
        count = 0
        for _token in engine.generate(ids, temp=0.0, top_k=1):
            count += 1
            if count == new_tokens:
                break
        speeds.append(count / (time.perf_counter() - started))
    return statistics.median(speeds)


def compiled_generate(mode: str, new_tokens: int, repeats: int) -> tuple[float, float, int]:
    """Median tok/s of ``generate`` with a static cache and a compiled decode step on the ``mode`` serving
    copy, the seconds its first (compiling) run took, and the graphs a second, longer prompt compiled."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig, StaticCache

    bot = Assistant.from_pretrained(serving=mode)
    llm = bot.model.llm
    compile_config = CompileConfig(fullgraph=False, dynamic=False)
    compile_config._compile_all_devices = True  # transformers' own switch for compiling on a CPU

    def run(messages) -> float:
        ids = torch.tensor([bot.prepare(messages).input_ids])
        started = time.perf_counter()
        with torch.inference_mode():
            llm.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         past_key_values=StaticCache(config=llm.config, max_cache_len=STATIC_CACHE_LEN),
                         compile_config=compile_config)
        return new_tokens / (time.perf_counter() - started)

    first = [{"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    run(first)
    compile_s = time.perf_counter() - started
    speed = statistics.median(run(first) for _ in range(repeats))
    graphs = counters["stats"]["unique_graphs"]
    run(first + [{"role": "assistant", "content": "Once upon a time " * 20}, {"role": "user", "content": "Go on."}])
    return speed, compile_s, counters["stats"]["unique_graphs"] - graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="greedy tokens per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per path (the median is printed)")
    modes = [mode for mode in SERVING_MODES if mode != "auto"]  # auto is one of the others
    parser.add_argument("--modes", nargs="+", default=modes, choices=modes)
    parser.add_argument("--gguf-types", nargs="+", default=["f16", "source", "q8_0", "q4_1"], choices=GGUF_TYPES,
                        help="weights of the llama_cpp mode (one run each)")
    parser.add_argument("--text-prompts", action="store_true", help="also compare greedy replies to the 32 text prompts")
    parser.add_argument("--compiled", action="store_true", help="also torch.compile'd decode steps (merged, int8)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} greedy tokens, median of {args.repeats}")
    eager = Assistant.from_pretrained(serving="eager")
    baseline = transformers_generate(eager, args.tokens, args.repeats)
    engine = llama_cpp(eager, args.tokens, args.repeats)
    versus = (lambda speed: f"  {speed / engine:5.2f}x llama.cpp") if engine else (lambda speed: "")
    print(f"transformers generate (eager)        {baseline:7.1f} tok/s   1.00x{versus(baseline)}")
    if engine is None:
        print("llama.cpp: skipped (llama_cpp is not importable or the LLM is not a GGUF file)")
    else:
        print(f"llama.cpp on the packaged GGUF       {engine:7.1f} tok/s  {engine / baseline:5.2f}x  (base weights, no LoRA)")
    reference = None
    eager_replies = text_replies(eager) if args.text_prompts else {}
    runs = [(mode, None) for mode in args.modes if mode != "llama_cpp"]
    runs += [("llama_cpp", kind) for kind in args.gguf_types] if "llama_cpp" in args.modes else []
    for mode, kind in runs:
        label = f"{mode} {kind}" if kind else mode
        if mode == "llama_cpp" and importlib.util.find_spec("llama_cpp") is None:
            print(f"Assistant.chat serving={label:<13}: skipped (llama_cpp is not importable)")
            continue
        extra = {"engine": EngineConfig(gguf_type=kind)} if kind else {}
        bot = eager if mode == "eager" else Assistant.from_pretrained(serving=mode, **extra)
        speed, text = ours(bot, args.tokens, args.repeats)
        reference = text if mode == "eager" else reference
        same = "same text as eager" if text == reference else f"text differs from eager at char {_first_difference(text, reference)}"
        print(f"Assistant.chat serving={label:<13} {speed:7.1f} tok/s  {speed / baseline:5.2f}x{versus(speed)}  {same}")
        if args.text_prompts:
            replies = eager_replies if bot is eager else text_replies(bot)
            differ = [prompt for prompt, reply in replies.items() if reply != eager_replies[prompt]]
            print(f"  {len(replies)} text prompts: {len(replies) - len(differ)} replies the same as eager" + "".join(f"\n    differs: {prompt!r}: "
                  f"{eager_replies[prompt]!r} -> {replies[prompt]!r}" for prompt in differ))
        if bot is not eager:
            bot._engine.close()  # frees llama.cpp's cache before the next run allocates its own
            del bot
    for mode in ("merged", "int8") if args.compiled else ():
        speed, compile_s, recompiled = compiled_generate(mode, args.tokens, args.repeats)
        print(f"generate {mode}, static cache, compiled {speed:7.1f} tok/s  {speed / baseline:5.2f}x{versus(speed)}  "
              f"(first run with compiling {compile_s:.0f} s; a longer conversation compiled {recompiled} more graphs)")


def text_replies(bot: Assistant, max_new_tokens: int = 40) -> dict[str, str]:
    from training.text_regression import TEXT_PROMPTS

    return {prompt: bot.chat([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens) for prompt, _ in TEXT_PROMPTS}


def _first_difference(a: str, b: str | None) -> int:
    b = b or ""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


if __name__ == "__main__":
    main()
