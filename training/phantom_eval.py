"""Scores of a phantom adapter: the findings it drafts for held-out DICOM studies against their truth.

Each study goes the plugin's way (``plugins.medical.findings.read_findings``): the DICOM file is
de-identified and windowed by ``plugins.medical.dicom_io.load_study``, resampled to the training pixel
spacing, and the adapter writes ``{"findings": [...]}`` under the findings schema. Per study:

- presence: lesion or none, right; count: the number of findings equals the number of lesions;
- location (studies with lesions): the set of organs named equals the true set (organ and side);
- size (each true lesion whose organ was named): within +-25% of the true diameter.

``held_out`` is the generator's own test split; ``independent_check`` is ``training.data.phantom_check``:
phantoms drawn by separate code (lobulated lesions, other organ densities, another noise, 16-bit signed
storage at another pixel spacing and window), so a score that only fits the generator shows up as a gap.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)
SIZE_TOLERANCE = 0.25


def score_study(predicted: list[dict[str, Any]], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """One study's scores; ``predicted`` and ``truth`` are findings lists (location, size_mm, ...)."""
    true_sizes = {finding["location"]: finding["size_mm"] for finding in truth}
    named = {finding["location"]: finding.get("size_mm") for finding in predicted}
    sizes = [
        named[organ] is not None and abs(named[organ] - size) <= SIZE_TOLERANCE * size
        for organ, size in true_sizes.items() if organ in named
    ]
    return {
        "presence": bool(predicted) == bool(truth), "count": len(predicted) == len(truth),
        "location": set(named) == set(true_sizes) if truth else None, "sizes": sizes,
    }


def summarise(scores: list[dict[str, Any]]) -> dict[str, Any]:
    located = [s["location"] for s in scores if s["location"] is not None]
    sizes = [ok for s in scores for ok in s["sizes"]]
    return {
        "studies": len(scores),
        "presence_accuracy": sum(s["presence"] for s in scores) / max(len(scores), 1),
        "count_accuracy": sum(s["count"] for s in scores) / max(len(scores), 1),
        "location_accuracy": sum(located) / max(len(located), 1),
        "size_within_25pct": sum(sizes) / max(len(sizes), 1), "sized_lesions": len(sizes),
        "invalid_reports": sum(1 for s in scores if s.get("error")),
    }


def evaluate_studies(assistant: Any, data: Path, split: str, max_studies: int | None = None) -> dict[str, Any]:
    from assistant.errors import AssistantError
    from plugins.medical.dicom_io import load_study
    from plugins.medical.findings import CT_WINDOW, read_findings

    records = [json.loads(line) for line in (data / f"{split}_truth.jsonl").read_text().splitlines() if line.strip()]
    scores, answers = [], []
    for record in tqdm(records[:max_studies], desc=f"phantom {split}", unit="study", mininterval=10):
        try:
            predicted = read_findings(assistant, load_study(data / record["dicom"], max_frames=1, ct_window=CT_WINDOW))
            score = score_study(predicted, record["findings"])
        except AssistantError as error:  # counted as wrong: a report the plugin could not draft
            predicted, score = [], {"presence": False, "count": False, "location": False if record["findings"] else None,
                                    "sizes": [False] * len(record["findings"]), "error": str(error)}
        scores.append(score)
        answers.append({"id": record["id"], "truth": record["findings"], "predicted": predicted})
    return {**summarise(scores), "answers": answers}


def phantom_report(adapter: str | Path | None, data: Path, max_studies: int | None = None) -> dict[str, Any]:
    """``held_out`` on ``data`` (a ``training.data.phantom_rows`` folder), ``independent_check`` on a fresh
    ``training.data.phantom_check`` set written under ``data/check``."""
    from assistant import Assistant
    from training.data.phantom_check import build_check

    assistant = Assistant.from_pretrained(adapter)
    check = data / "check"
    if not (check / "check_truth.jsonl").is_file():
        build_check(check, max_studies or 100)
    return {"held_out": evaluate_studies(assistant, data, "test", max_studies),
            "independent_check": evaluate_studies(assistant, check, "check", max_studies)}


def format_phantom_table(report: dict[str, Any]) -> str:
    rows = ["| set | studies | presence | count | location | size ±25% |", "|---|---|---|---|---|---|"]
    for name, part in report.items():
        rows.append(f"| {name.replace('_', ' ')} | {part['studies']} | {part['presence_accuracy']:.1%} | {part['count_accuracy']:.1%} | "
                    f"{part['location_accuracy']:.1%} | {part['size_within_25pct']:.1%} ({part['sized_lesions']} lesions) |")
    return "\n".join(rows)
