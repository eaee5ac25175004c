"""How much smoothing helps the frozen encoder see phantom lesions? A small trained head on frozen tokens.

For each smoothing sigma, the phantoms' frames (the plugin's ingest: DICOM de-identified, CT at
``findings.CT_WINDOW``, then ``findings.reading_frame`` with that sigma) are encoded by the frozen
EfficientNet-Lite0 (block 5, the phantom adapter's layer). A head of four organ queries
attending over the 49 tokens is trained to say which organs hold a lesion, and scored on held-out
studies: how often it names the exact set of organs (the evaluation's *location*), the count, and
the recall of lesions under 15 mm. It is an upper-bound-style probe of what the tokens carry, not the
adapter's score; ``plugins.medical.findings.DENOISE_SIGMA_PX`` was chosen with it.

    python benchmarks/probe_phantom_reading.py                       # sigmas 0, 1, 1.5, 2, 2.5
    python benchmarks/probe_phantom_reading.py --sigmas 0 2 --train 600 --test 200
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assistant.encoders.efficientnet import EfficientNetLite0Encoder  # noqa: E402
from plugins.medical.dicom_io import load_study  # noqa: E402
from plugins.medical.findings import CT_WINDOW, reading_frame  # noqa: E402
from training.data.phantom_rows import build_split  # noqa: E402
from training.data.phantoms import ORGANS  # noqa: E402

logger = logging.getLogger("probe_phantom_reading")


class OrganQueries(torch.nn.Module):
    """Four learned queries (one per organ) attend over the projected tokens; one logit each: lesion or not."""

    def __init__(self, tokens: int, width: int, hidden: int = 256) -> None:
        super().__init__()
        self.project = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
        self.positions = torch.nn.Parameter(torch.zeros(tokens, hidden))
        self.queries = torch.nn.Parameter(torch.randn(len(ORGANS), hidden) * 0.02)
        self.attention = torch.nn.MultiheadAttention(hidden, 4, batch_first=True)
        self.logit = torch.nn.Linear(hidden, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, 4)
        keys = self.project(tokens) + self.positions
        pooled, _ = self.attention(self.queries.expand(len(tokens), -1, -1), keys, keys)
        return self.logit(pooled).squeeze(-1)


def studies(folder: Path, split: str) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """DICOM paths, (S, 4) lesion-per-organ labels and (S, 4) diameters (0 where none)."""
    records = [json.loads(line) for line in (folder / f"{split}_truth.jsonl").read_text().splitlines()]
    labels, sizes = torch.zeros(len(records), len(ORGANS)), torch.zeros(len(records), len(ORGANS))
    for index, record in enumerate(records):
        for lesion in record["lesions"]:
            labels[index, ORGANS.index(lesion["organ"])] = 1
            sizes[index, ORGANS.index(lesion["organ"])] = lesion["diameter_mm"]
    return [folder / record["dicom"] for record in records], labels, sizes


@torch.no_grad()
def encode(encoder: EfficientNetLite0Encoder, loaded: list, sigma: float, batch: int = 50) -> torch.Tensor:
    """Block-5 tokens of each loaded study's first frame as ``reading_frame`` prepares it with ``sigma``."""
    frames = [reading_frame(study.frames[0], study.pixel_spacing_mm, sigma) for study in loaded]
    return torch.cat([encoder.features(encoder.preprocess(frames[i:i + batch])) for i in range(0, len(frames), batch)])


def probe(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor, sizes: torch.Tensor,
          epochs: int, seed: int) -> dict[str, float]:
    mean, std = train.mean((0, 1)), train.std((0, 1)) + 1e-5
    train, test = (train - mean) / std, (test - mean) / std
    torch.manual_seed(seed)
    head = OrganQueries(train.shape[1], train.shape[2])
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(epochs):
        for batch in torch.randperm(len(train)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(head(train[batch]), labels[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        named = head.eval()(test) > 0
    truth = test_labels.bool()
    small = (sizes > 0) & (sizes < 15)
    return {"exact_set": (named == truth).all(1).float().mean().item(), "count": (named.sum(1) == truth.sum(1)).float().mean().item(),
            "small_recall": named[small].float().mean().item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.0, 1.5, 2.0, 2.5])
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3, help="head seeds per sigma; the median is printed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    encoder = EfficientNetLite0Encoder(224, 5).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_split(folder, "train", args.train)
        build_split(folder, "test", args.test, start_index=args.train)
        data = {}
        for split in ("train", "test"):
            paths, labels, sizes = studies(folder, split)
            loaded = [load_study(path, max_frames=1, ct_window=CT_WINDOW)
                      for path in tqdm(paths, desc=f"{split} studies", mininterval=10)]
            data[split] = (loaded, labels, sizes)
    print(f"{args.train} training / {args.test} held-out phantoms; median of {args.seeds} head seeds")
    print("| sigma (px) | exact organ set | count | recall < 15 mm |\n|---|---|---|---|")
    for sigma in args.sigmas:
        train, test = encode(encoder, data["train"][0], sigma), encode(encoder, data["test"][0], sigma)
        runs = [probe(train, data["train"][1], test, data["test"][1], data["test"][2], args.epochs, seed) for seed in range(args.seeds)]
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {sigma:g} | {median['exact_set']:.1%} | {median['count']:.1%} | {median['small_recall']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
