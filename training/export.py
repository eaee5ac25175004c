"""Export an adapter for serving without peft: merge LoRA into the base LLM's weights.

    python -m training.export --adapter runs/x/adapter --out runs/x/merged

The output is a normal adapter artifact whose ``llm.model`` points at the merged model folder (saved
as safetensors next to it), so ``Assistant.from_pretrained(out)`` loads it with no LoRA layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from assistant import Assistant, AssistantError

logger = logging.getLogger("training.export")


def merge_lora(adapter: str | Path, out: str | Path) -> Path:
    """Write a LoRA-free copy of ``adapter`` to ``out``; returns ``out``."""
    assistant = Assistant.from_pretrained(adapter, serving="eager")
    if assistant.config.llm.quantize:
        raise AssistantError("merging LoRA needs full-precision base weights: train or export with quantize=None")
    llm = assistant.model.llm
    if not hasattr(llm, "merge_and_unload"):
        raise AssistantError(f"{adapter} has no LoRA adapter to merge")
    merged = llm.merge_and_unload()
    out = Path(out)
    merged_folder = out.parent / f"{out.name}-llm"
    merged.save_pretrained(merged_folder, safe_serialization=True)
    assistant.tokenizer.save_pretrained(merged_folder)
    assistant.model.llm = merged
    llm_config = dataclasses.replace(assistant.config.llm, model=str(merged_folder.resolve()))
    llm_config.lora = dataclasses.replace(llm_config.lora, r=0)
    assistant.config = dataclasses.replace(assistant.config, llm=llm_config)
    assistant.save_pretrained(out)
    logger.info("merged LoRA into %s; artifact at %s", merged_folder, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, help="adapter artifact with LoRA")
    parser.add_argument("--out", required=True, help="folder for the merged artifact")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        merge_lora(args.adapter, args.out)
    except AssistantError as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
