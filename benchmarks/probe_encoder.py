"""Which EfficientNet-Lite0 layer tells an object's colour and shape? A linear probe on frozen tokens.

For generated scenes (``training.data.scenes``), each object's label is read from the token of the
7x7 grid cell under its centre; a linear classifier is trained on the first 80% of scenes and scored
on the rest. Stride-16 blocks are folded onto the 7x7 grid by space-to-depth, as the encoder does.

    python benchmarks/probe_encoder.py                 # 1000 scenes, layers 3, 5, 10, 15 and the head
    python benchmarks/probe_encoder.py --layers 5 -1 --scenes 400
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assistant.encoders.efficientnet import EfficientNetLite0Encoder  # noqa: E402
from training.data.scene_layout import COLOURS, SHAPES  # noqa: E402

logger = logging.getLogger("probe_encoder")


def object_cells(scenes: list[dict], grid: int, canvas: int) -> torch.Tensor:
    """(objects, 5): scene index, row, column, colour index, shape index."""
    rows = []
    for index, scene in enumerate(scenes):
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            cell = canvas / grid
            column, row = min(grid - 1, int((x0 + x1) / 2 / cell)), min(grid - 1, int((y0 + y1) / 2 / cell))
            rows.append((index, row, column, list(COLOURS).index(obj["colour"]), SHAPES.index(obj["shape"])))
    return torch.tensor(rows)


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, classes: int) -> float:
    """Held-out accuracy of a linear classifier (full-batch Adam on standardised features)."""
    mean, std = features[train].mean(0), features[train].std(0) + 1e-5
    features = (features - mean) / std
    classifier = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(features[train]), labels[train]).backward()
        optimizer.step()
    with torch.no_grad():
        return (classifier(features[~train]).argmax(-1) == labels[~train]).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=1000, help="generated scenes (80%% train, 20%% test)")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 5, 10, 15, -1], help="blocks 0-15, -1 = head")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from training.data.scenes import main as make_scenes

    with tempfile.TemporaryDirectory() as folder:
        make_scenes(["--out", folder, "--train", str(args.scenes), "--val", "0", "--test", "0", "--seed", str(args.seed)])
        scenes = [json.loads(line) for line in (Path(folder) / "train_scenes.jsonl").read_text().splitlines()]
        images = [Image.open(Path(folder) / scene["image"]).convert("RGB") for scene in scenes]
    cells = object_cells(scenes, grid=7, canvas=images[0].width)
    train = cells[:, 0] < int(0.8 * len(scenes))
    print(f"{len(cells)} objects in {len(scenes)} scenes; probe trained on {int(train.sum())}, scored on {int((~train).sum())}")
    print(f"{'layer':>8} {'tokens':>12} {'colour':>8} {'shape':>8}")
    for layer in args.layers:
        encoder = EfficientNetLite0Encoder(feature_layer=layer)
        tokens = torch.cat([encoder.encode(images[i : i + 50]) for i in tqdm(range(0, len(images), 50), desc=f"layer {layer}")])
        grid = tokens.view(len(images), 7, 7, -1)
        features = grid[cells[:, 0], cells[:, 1], cells[:, 2]]  # (objects, D)
        colour = probe_accuracy(features, cells[:, 3], train, len(COLOURS))
        shape = probe_accuracy(features, cells[:, 4], train, len(SHAPES))
        name = "head" if layer == -1 else f"block {layer}"
        print(f"{name:>8} {f'49 x {tokens.shape[-1]}':>12} {colour:8.1%} {shape:8.1%}")


if __name__ == "__main__":
    main()
