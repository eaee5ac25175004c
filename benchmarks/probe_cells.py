"""What does a trained connector tell the LLM about each object? Decode its cell tokens as words.

For the scenes of a split written by ``training.data.scenes`` (``<split>_scenes.jsonl``), the tokens of
the grid cell under each object's centre are read as the nearest word of the LLM's whole vocabulary
(by dot product with its input embeddings, as the grounded alignment objective scores them):

- ``chosen``: the object's cell is among those the connector passes on (``select_cells``; 1.0 without);
- ``size`` / ``colour`` / ``shape`` / ``position``: with one token per word (``tokens_per_cell`` 4), token k
  decodes to the k-th word of "large red circle left"; with one token per cell, any of the cell's
  five nearest words is the object's;
- ``background``: the first token of a cell holding no object's centre decodes to "background".

    python benchmarks/probe_cells.py --adapter runs/default/align/adapter --data runs/default/data [--split val]

Only for connectors that keep the encoder's grid (``mlp``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assistant import Assistant  # noqa: E402
from training.grounding import grid_cell  # noqa: E402

ATTRIBUTES = ("size", "colour", "shape", "position")  # the order of a region's words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, help="adapter folder (e.g. the align stage's output)")
    parser.add_argument("--data", required=True, help="folder written by training.data.scenes")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    bot = Assistant.from_pretrained(args.adapter)
    model, tokenizer = bot.model, bot.tokenizer
    connector, encoder = model.connectors["image"], model.encoders["image"]
    if not getattr(connector, "keeps_grid", False) or not encoder.grid:
        raise SystemExit("this probe needs a connector whose cells are the encoder's grid (mlp)")
    embeddings = model.llm.get_input_embeddings().weight.detach().float()  # (V, D)
    scenes = [json.loads(line) for line in (Path(args.data) / f"{args.split}_scenes.jsonl").read_text().splitlines() if line]
    counts: Counter = Counter()
    for scene in tqdm(scenes, desc="scenes"):
        image = Image.open(Path(args.data) / scene["image"]).convert("RGB")
        side = image.width
        with torch.no_grad():
            cells, scores = model.connect_cells("image", encoder.encode([image]).float())
        cells = cells[0].float()  # (N, S, D)
        nearest = (cells @ embeddings.T).topk(5, dim=-1).indices  # (N, S, 5)
        chosen = set(range(cells.shape[0])) if scores is None else set(connector.chosen_cells(scores)[0].tolist())
        centres = set()
        for item in scene["objects"]:
            x0, y0, x1, y1 = item["bbox"]
            cell = grid_cell(((x0 + x1) / 2 / side, (y0 + y1) / 2 / side), encoder.grid)
            centres.add(cell)
            counts["objects"] += 1
            counts["chosen"] += cell in chosen
            if cells.shape[1] >= len(ATTRIBUTES):
                words = [tokenizer.decode([int(ids[0])]).strip() for ids in nearest[cell]]
                counts.update(name for k, name in enumerate(ATTRIBUTES) if words[k] == item[name])
            else:
                words = {tokenizer.decode([int(i)]).strip() for i in nearest[cell, 0]}
                counts.update(name for name in ATTRIBUTES if item[name] in words)
        for cell in set(range(cells.shape[0])) - centres:
            counts["empty cells"] += 1
            counts["background"] += tokenizer.decode([int(nearest[cell, 0, 0])]).strip() == "background"
    print(f"\n{len(scenes)} {args.split} scenes, {counts['objects']} objects, {counts['empty cells']} empty cells "
          f"({cells.shape[1]} token(s) per cell)")
    for name in ("chosen", *ATTRIBUTES):
        print(f"{name:<12}{counts[name] / counts['objects']:>8.1%}")
    print(f"{'background':<12}{counts['background'] / counts['empty cells']:>8.1%}")


if __name__ == "__main__":
    main()
