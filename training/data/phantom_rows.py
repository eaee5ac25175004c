"""Training and test data for the phantom adapter: DICOM files with fake PHI, their de-identified frames, and rows.

For each study ``{split}_{index:05d}``:

- ``dicom/{split}_{index:05d}.dcm``: the phantom (``training.data.phantoms``) with fake PHI in its tags;
- ``images/{split}_{index:05d}.png``: the frame ``plugins.medical.dicom_io.load_study`` makes of that file
  (de-identified first, CT read at ``plugins.medical.findings.CT_WINDOW``), as ``findings.reading_frame`` prepares it
  (training spacing, noise smoothed): exactly what the plugin shows the model;
- rows (typed messages) in ``{split}.jsonl``: a *report* row that opens with ``FINDINGS_PROMPT`` answered by the
  findings JSON (``plugins.medical.findings.findings_json``) and goes on with questions (is there a lesion,
  how many, which organs, how large, darker or brighter), and a *questions* row with the questions alone;
  train rows carry ``regions`` (each lesion's box and four words: size, dark/bright, organ, side) for the
  lexical alignment stage;
- ``{split}_truth.jsonl``: the lesions and findings of every study; ``identities.jsonl``: the fake PHI
  written into each file, kept apart (never in a row) for leak tests.

    python -m training.data.phantom_rows --out runs/phantom/data --train 1500 --test 200
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from plugins.medical.findings import FINDINGS_PROMPT, findings_json, organs_phrase
from training.data.phantoms import ORGANS, SIZE_WORDS, Phantom, fake_identity, make_phantom, render_hu, truth_record, write_dicom

logger = logging.getLogger(__name__)
SPLIT_SEEDS = {"train": 11, "val": 12, "test": 13}


def _size_word(diameter_mm: float) -> str:
    return next(word for limit, word in SIZE_WORDS if diameter_mm < limit)


def region_words(phantom: Phantom) -> list[dict[str, Any]]:
    """One region per lesion: its box and "<size> <dark|bright> <organ> <side>"."""
    regions = []
    for lesion in phantom.lesions:
        organ, side = (lesion.organ.split()[1], lesion.organ.split()[0]) if " " in lesion.organ else (lesion.organ, "right" if lesion.organ == "liver" else "left")
        shade = "dark" if lesion.delta_hu < 0 else "bright"
        regions.append({"image": 0, "box": [round(v, 4) for v in lesion.box()], "text": f"{_size_word(lesion.diameter_mm)} {shade} {organ} {side}"})
    return regions


def questions(phantom: Phantom, rng: random.Random) -> list[tuple[str, str]]:
    """Question/answer pairs about one phantom, shuffled."""
    by_organ = {lesion.organ: lesion for lesion in phantom.lesions}
    organs = [organ for organ in ORGANS if organ in by_organ]
    pairs = [
        (rng.choice(("Is there a lesion?", "Are there any lesions?")), "yes" if organs else "no"),
        (rng.choice(("How many lesions are there?", "How many lesions do you see?")), str(len(organs))),
        (rng.choice(("Which organs have a lesion?", "Where are the lesions?")), organs_phrase(organs)),
    ]
    for organ in organs:
        lesion = by_organ[organ]
        pairs.append((f"How large is the lesion in the {organ}?", f"{round(lesion.diameter_mm)} mm"))
        pairs.append((f"Is the lesion in the {organ} darker or brighter than the organ?", "darker" if lesion.delta_hu < 0 else "brighter"))
    clean = [organ for organ in ORGANS if organ not in by_organ]
    if clean:
        pairs.append((f"Is there a lesion in the {rng.choice(clean)}?", "no"))
    rng.shuffle(pairs)
    return pairs


def _turns(image: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    messages = []
    for number, (question, answer) in enumerate(pairs):
        content: list[dict[str, Any]] = [{"type": "text", "text": question}]
        if number == 0:
            content.insert(0, {"type": "image", "image": image})
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return messages


def build_split(out: Path, split: str, count: int, seed: int = 0, start_index: int = 0) -> int:
    """Write one split's DICOM files, frames and rows; returns the number of studies."""
    from plugins.medical.dicom_io import load_study
    from plugins.medical.findings import CT_WINDOW, reading_frame

    for folder in ("dicom", "images"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    with open(out / f"{split}.jsonl", "w", encoding="utf-8") as rows, open(out / f"{split}_truth.jsonl", "w", encoding="utf-8") as truth, \
            open(out / "identities.jsonl", "a", encoding="utf-8") as identities:
        for index in tqdm(range(count), desc=f"{split} phantoms", unit="study", mininterval=10):
            name = f"{split}_{index:05d}"
            rng = random.Random(f"phantom/{seed}/{SPLIT_SEEDS[split]}/{index}")
            phantom = make_phantom(rng)
            identity = fake_identity(rng, start_index + index)
            dicom = out / "dicom" / f"{name}.dcm"
            write_dicom(dicom, render_hu(phantom, rng.getrandbits(32)), identity, start_index + index, rng)
            study = load_study(dicom, max_frames=1, ct_window=CT_WINDOW)
            reading_frame(study.frames[0], study.pixel_spacing_mm).save(out / "images" / f"{name}.png")
            image = f"images/{name}.png"
            report = [(FINDINGS_PROMPT, findings_json(phantom.findings()))] + questions(phantom, rng)[:4]
            extra = {"regions": region_words(phantom)} if split == "train" else {}
            rows.write(json.dumps({"id": f"{name}_report", "question_type": "report", "messages": _turns(image, report), **extra}) + "\n")
            rows.write(json.dumps({"id": f"{name}_questions", "question_type": "questions", "messages": _turns(image, questions(phantom, rng)), **extra}) + "\n")
            truth.write(json.dumps({"id": name, "dicom": f"dicom/{name}.dcm", "image": image, **truth_record(phantom)}) + "\n")
            identities.write(json.dumps({"id": name, **identity}) + "\n")
    return count


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="python -m training.data.phantom_rows", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=1500, help="training studies")
    parser.add_argument("--val", type=int, default=24, help="validation studies")
    parser.add_argument("--test", type=int, default=200, help="held-out test studies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "identities.jsonl").unlink(missing_ok=True)
    counts, start = {}, 0
    for split in ("train", "val", "test"):
        counts[split] = build_split(out, split, getattr(args, split), args.seed, start)
        start += counts[split]
    (out / "summary.json").write_text(json.dumps({"studies": counts}, indent=2) + "\n")
    logger.info("phantom studies: %s", counts)
    return counts


if __name__ == "__main__":
    main()
