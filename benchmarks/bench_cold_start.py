"""Cold start of the built-in default: first start (empty model cache) and second start (cache warm).

Two figures per start, each measured from a fresh Python process:

- ``from_pretrained``: from the interpreter starting to ``Assistant.from_pretrained()`` returning
  (imports, the GGUF -> safetensors cache, LoRA, and for llama.cpp serving the merged GGUF file);
- ``launch_ui.py``: from ``python launch_ui.py`` starting to the first streamed token of the first reply,
  asked through the UI's own queue with ``gradio_client`` (the same request a browser sends).

The first start runs with ``MMA_CACHE_DIR`` pointing at an empty folder, the second reuses it. Prints
medians over ``--repeats`` second starts. Run: ``python benchmarks/bench_cold_start.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = """
import time
started = time.perf_counter()
from assistant import Assistant
bot = Assistant.from_pretrained(serving={serving!r})
print("READY", time.perf_counter() - started, bot.describe()["llm"], flush=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def from_pretrained_s(serving: str, cache: Path) -> tuple[float, str]:
    """Seconds from interpreter start to a ready assistant (the interpreter's own start included)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", READY.format(serving=serving)], cwd=ROOT, env=_env(cache),
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("READY"))
    return time.perf_counter() - started, line.split(" ", 2)[2]


def first_token_s(serving: str, cache: Path, question: str) -> float:
    """Seconds from ``python launch_ui.py`` to the first piece of the first streamed reply."""
    from gradio_client import Client

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "launch_ui.py", "--port", str(port), "--serving", serving], cwd=ROOT,
                               env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"launch_ui.py exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        client = Client(url, verbose=False)
        job = client.submit({"text": question, "files": []}, api_name="/respond")  # the ChatInterface handler
        while not job.done():
            outputs = job.outputs()
            if outputs and _text(outputs[-1]):
                return time.perf_counter() - started
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def _text(output) -> str:
    reply = output[0] if isinstance(output, (list, tuple)) else output
    if isinstance(reply, dict):
        reply = reply.get("content", "")
    return reply if isinstance(reply, str) else str(reply or "")


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "MMA_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serving", nargs="+", default=["eager", "auto"], help="serving modes to start with")
    parser.add_argument("--repeats", type=int, default=3, help="second starts per figure (the median is printed)")
    parser.add_argument("--question", default="What is the capital of France?")
    args = parser.parse_args()
    for serving in args.serving:
        with tempfile.TemporaryDirectory(prefix="mma-cold-") as folder:
            cache = Path(folder)
            first, llm = from_pretrained_s(serving, cache)
            second = statistics.median(from_pretrained_s(serving, cache)[0] for _ in range(args.repeats))
            print(f"serving={serving:<6} from_pretrained: first start {first:6.1f} s, second {second:6.1f} s   ({llm})")
        with tempfile.TemporaryDirectory(prefix="mma-cold-") as folder:
            cache = Path(folder)
            first = first_token_s(serving, cache, args.question)
            second = statistics.median(first_token_s(serving, cache, args.question) for _ in range(args.repeats))
            print(f"serving={serving:<6} launch_ui.py to first token: first start {first:6.1f} s, second {second:6.1f} s")


if __name__ == "__main__":
    main()
