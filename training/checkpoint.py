"""Atomic, resumable checkpoints of a training run.

A checkpoint folder holds the trainable weights (safetensors), the optimizer and scheduler state and
the RNG state (``torch.save`` of tensors and numbers, read back with ``weights_only=True``), and the
data position (JSON). It is written to a hidden staging folder and renamed into place, so a crash
mid-write never damages the newest complete checkpoint; only the last ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches consumed (the data position)
    samples: int = 0
    last_loss: float = float("nan")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    folder: Path, state: TrainerState, model: torch.nn.Module, optimizer: Any, scheduler: Any, keep_last: int
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"checkpoint-{state.step:07d}"
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    try:
        save_file(trainable_state(model), str(staging / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, staging / "rng.pt")
        (staging / "trainer_state.json").write_text(json.dumps(asdict(state)))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", target)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders are never listed)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> TrainerState:
    weights = load_file(str(path / "trainable.safetensors"))
    parameters = dict(model.named_parameters())
    missing = {n for n, p in parameters.items() if p.requires_grad} - set(weights)
    if missing or set(weights) - set(parameters):
        raise RuntimeError(f"checkpoint {path} does not match the model (missing {sorted(missing)[:3]})")
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainerState(**json.loads((path / "trainer_state.json").read_text()))
