"""``caption_image``: a caption for a picture of the conversation, and captioning a whole folder.

In the chat, the plugin describes one of the conversation's pictures with the loaded assistant's
own vision (``detail="detailed"`` adds the objects its connector grounds, each with a box), or with
the Hugging Face image-to-text model named by ``$MMA_CAPTION_MODEL`` when that is set.

On a folder it writes JSONL rows that are at once training rows (messages format, with
``regions`` from the grounded objects where there are any) and ``{image, caption}`` pairs for
``python -m training.image_head``, so a user can caption their pictures, index them and fine-tune
on them::

    python -m plugins.captioning photos/ --out photos/captions.jsonl            # the built-in assistant
    python -m plugins.captioning photos/ --model Salesforce/blip-image-captioning-base   # an HF captioner
    accelerate launch -m plugins.captioning photos/ --out photos/captions.jsonl  # shard over GPUs
    torchrun --nproc_per_node 2 -m plugins.captioning photos/ --out photos/captions.jsonl   # over CPU processes

Image paths in the rows are relative to the output file's folder (put it in or above the pictures).
Under ``accelerate launch`` or ``torchrun`` every process captions its share of the files into its own part file,
and the main process joins them in file order. Unreadable pictures are listed and skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from langchain_core.tools import InjectedToolArg, ToolException
from tqdm.auto import tqdm

from assistant.captioning import PROMPTS, AssistantCaptioner, Caption, Captioner, HFCaptioner
from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.media import load_image
from assistant.tools.context import ToolContext
from plugins.base import plugin
from plugins.retrieval.documents import PICTURE_SUFFIXES, scan_folder

logger = logging.getLogger(__name__)


def describe(result: Caption) -> str:
    """The caption, then one line per grounded object with its box."""
    lines = [result.text]
    if result.objects:
        lines.append("Objects the picture's tokens point at (box: x0, y0, x1, y1 as fractions of the picture):")
        lines += [f"- {obj.words}: [{', '.join(f'{v:.2f}' for v in obj.box)}]" for obj in result.objects]
    return "\n".join(lines)


CAPTION_MODEL_VARIABLE = "MMA_CAPTION_MODEL"


@functools.lru_cache(maxsize=2)
def hf_captioner(model: str) -> HFCaptioner:
    """One loaded image-to-text model per name (the plugin is called many times)."""
    return HFCaptioner(model)


@plugin(timeout_s=120.0)
def caption_image(
    detail: Literal["short", "detailed"] = "short",
    image: int = -1,
    context: Annotated[ToolContext, InjectedToolArg] = None,
) -> str:
    """Describe a picture of the conversation in words.

    Args:
        detail: "short" for one sentence, "detailed" to also list each object with where it is.
        image: Which picture of the conversation: -1 is the latest, 0 the first.
    """
    if context is None or context.assistant is None:
        raise ToolException("caption_image needs the conversation's assistant; run it through the assistant's tool runner")
    picture = context.image(image)
    try:
        model = os.environ.get(CAPTION_MODEL_VARIABLE)
        captioner = hf_captioner(model) if model else AssistantCaptioner(context.assistant)
        return describe(captioner.caption(picture, detail))
    except AssistantError as error:
        raise ToolException(str(error)) from None


def caption_row(captioner: Captioner, path: Path, relative: str, detail: str, limits: MediaConfig) -> dict[str, Any]:
    """One JSONL row for a picture: ``image``, ``caption``, ``messages`` (training format), ``regions``."""
    picture = load_image(str(path), limits).frames[0].image
    result = captioner.caption(picture, detail)
    row: dict[str, Any] = {
        "id": relative,
        "image": relative,
        "caption": result.text,
        "captioner": captioner.name,
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": relative}, {"type": "text", "text": PROMPTS[detail]}]},
            {"role": "assistant", "content": result.text},
        ],
    }
    if result.objects:
        row["regions"] = [{"image": 0, "box": list(obj.box), "text": obj.words} for obj in result.objects]
    return row


def picture_files(folder: Path) -> list[Path]:
    """Pictures under ``folder`` in a stable order, links not followed."""
    scan = scan_folder(folder)
    for relative, reason in scan.skipped:
        if Path(relative).suffix.lower() in PICTURE_SUFFIXES:
            logger.warning("skipping %s: %s", relative, reason)
    return [file.path for file in scan.files if file.kind == "picture"]


def caption_folder(folder: str | os.PathLike, out: str | os.PathLike, captioner: Captioner, detail: str = "short",
                   process_index: int = 0, num_processes: int = 1) -> tuple[int, list[tuple[str, str]]]:
    """Caption this process's share of the pictures under ``folder`` into ``out`` (or ``out.partN``).

    Returns:
        (rows written, [(picture, reason) skipped]).
    """
    folder, out = Path(folder).resolve(), Path(out).resolve()
    files = picture_files(folder)[process_index::num_processes]
    target = out if num_processes == 1 else out.with_name(f"{out.name}.part{process_index}")
    target.parent.mkdir(parents=True, exist_ok=True)
    limits, written, skipped = MediaConfig(), 0, []
    with target.open("w", encoding="utf-8") as handle:
        for path in tqdm(files, desc=f"caption {process_index + 1}/{num_processes}", unit="picture", disable=process_index > 0):
            relative = os.path.relpath(path, out.parent)
            try:
                handle.write(json.dumps(caption_row(captioner, path, relative, detail, limits), ensure_ascii=False) + "\n")
                written += 1
            except AssistantError as error:
                skipped.append((relative, str(error)))
                logger.warning("skipping %s: %s", relative, error)
    return written, skipped


def join_parts(out: Path, num_processes: int) -> int:
    """Merge the part files into ``out`` (sorted by image path, so the result does not depend on the sharding)."""
    rows = []
    for index in range(num_processes):
        part = out.with_name(f"{out.name}.part{index}")
        rows += [line for line in part.read_text(encoding="utf-8").splitlines() if line]
        part.unlink()
    rows.sort(key=lambda line: json.loads(line)["image"])
    staging = out.with_name(f".{out.name}.tmp")
    staging.write_text("".join(line + "\n" for line in rows), encoding="utf-8")
    os.replace(staging, out)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m plugins.captioning", description="Caption every picture of a folder into JSONL rows.")
    parser.add_argument("folder")
    parser.add_argument("--out", default=None, help="JSONL file (default: FOLDER/captions.jsonl)")
    parser.add_argument("--model", default=None, help="a Hugging Face image-to-text id or folder (default: the built-in assistant)")
    parser.add_argument("--adapter", default=None, help="an assistant artifact folder to caption with (default: the built-in one)")
    parser.add_argument("--detail", choices=sorted(PROMPTS), default="detailed")
    args = parser.parse_args(argv)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True is what makes torchrun's processes a gloo group
    out = Path(args.out or Path(args.folder) / "captions.jsonl")
    try:
        if args.model:
            captioner: Captioner = HFCaptioner(args.model)
        else:
            from assistant import Assistant

            captioner = AssistantCaptioner(Assistant.from_pretrained(args.adapter))
        written, skipped = caption_folder(args.folder, out, captioner, args.detail, state.process_index, state.num_processes)
    except AssistantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for relative, reason in skipped:
        print(f"skipped {relative}: {reason}", file=sys.stderr)
    if state.num_processes > 1:
        state.wait_for_everyone()
        if state.is_main_process:
            written = join_parts(out.resolve(), state.num_processes)
    if state.is_main_process:
        print(f"{written} rows written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
