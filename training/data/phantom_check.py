"""An independent check for the phantom adapter: phantoms drawn by code that shares nothing with the training
generator but the organ names and the report format.

Differences from ``training.data.phantoms``, each on purpose: organs are superellipses with their own
densities and placement; lesions are lobulated (two or three overlapping blobs), sized by their largest
extent; noise is signal-dependent with a coarser grain; files are 256x256 at 1.5 mm, stored as signed
16-bit with intercept 0, and carry another window (50/350). The plugin's ingest resamples them to the
training spacing, as it would a real scanner's. Truth is written in the same ``check_truth.jsonl`` form.

    python -m training.data.phantom_check --out runs/phantom/data/check --studies 100
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

SIZE, SPACING = 256, 1.5
# centre (fraction of the picture), half-axes in mm, density in HU, superellipse exponent
ORGANS = {
    "liver": ((0.31, 0.44), (62.0, 50.0), 68.0, 2.6),
    "spleen": ((0.71, 0.42), (26.0, 38.0), 55.0, 2.2),
    "right kidney": ((0.35, 0.66), (19.0, 29.0), 140.0, 2.0),
    "left kidney": ((0.64, 0.66), (19.0, 29.0), 140.0, 2.0),
}


def _superellipse(x, y, centre, axes, power) -> np.ndarray:
    return (np.abs((x - centre[0]) / axes[0]) ** power + np.abs((y - centre[1]) / axes[1]) ** power) <= 1.0


def draw(rng: random.Random) -> tuple[np.ndarray, list[dict]]:
    """One phantom in HU and its findings (organ order as the report writes them)."""
    from scipy.ndimage import uniform_filter

    y, x = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5) * SPACING   # millimetres
    mid = SIZE * SPACING / 2
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    body_axes = (rng.uniform(150, 175), rng.uniform(110, 130))
    hu[_superellipse(x, y, (mid, mid + 8), body_axes, 2.3)] = -90.0
    hu[_superellipse(x, y, (mid, mid + 8), (body_axes[0] - 12, body_axes[1] - 12), 2.3)] = 35.0
    hu[_superellipse(x, y, (mid, mid + 0.45 * body_axes[1]), (17, 15), 2.0)] = 650.0
    placed = {}
    for name, ((fx, fy), axes, density, power) in ORGANS.items():
        centre = (fx * SIZE * SPACING + rng.uniform(-6, 6), fy * SIZE * SPACING + rng.uniform(-6, 6))
        axes = (axes[0] * rng.uniform(0.9, 1.1), axes[1] * rng.uniform(0.9, 1.1))
        hu[_superellipse(x, y, centre, axes, power)] = density
        placed[name] = (centre, axes, density)
    findings = []
    for name in sorted(rng.sample(list(ORGANS), rng.choice((0, 1, 1, 2, 3))), key=list(ORGANS).index):
        (cx, cy), (ax, ay), density = placed[name]
        size = rng.uniform(9, min(36, 1.2 * min(ax, ay)))
        mask = np.zeros((SIZE, SIZE), bool)
        px, py = cx + rng.uniform(-0.3, 0.3) * ax, cy + rng.uniform(-0.3, 0.3) * ay
        for _ in range(rng.choice((2, 3))):   # lobules inside the lesion's extent
            r = size / 2 * rng.uniform(0.55, 0.8)
            offset = size / 2 - r
            angle = rng.uniform(0, 2 * np.pi)
            mask |= (x - px - offset * np.cos(angle)) ** 2 + (y - py - offset * np.sin(angle)) ** 2 <= r * r
        rows, cols = np.nonzero(mask)
        extent = max(np.ptp(rows) + 1, np.ptp(cols) + 1) * SPACING
        delta = rng.choice((-1, 1)) * rng.uniform(30, 75)
        hu[mask] = density + delta
        findings.append({"location": name, "description": f"{'hypodense' if delta < 0 else 'hyperdense'} lesion",
                         "size_mm": round(float(extent)), "confidence": "medium"})
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, 1, (SIZE, SIZE)).astype(np.float32)
    sigma = rng.uniform(8, 16) * np.sqrt(np.clip(hu + 1000, 0, None) / 1040)   # quieter in air, louder in bone
    return hu + uniform_filter(grain, 3) * 3 * sigma, findings


def write(path: Path, hu: np.ndarray, index: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"check-{index}"])
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.PatientName, ds.PatientID = "CT", "ABDOMEN", f"Check^Subject{index}", f"CHK{index:06d}"
    ds.Rows = ds.Columns = SIZE
    ds.PixelSpacing, ds.SliceThickness = [SPACING, SPACING], 3.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0.0, 1.0
    ds.WindowCenter, ds.WindowWidth = 50.0, 350.0
    ds.PixelData = np.clip(np.round(hu), -1024, 3071).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def build_check(out: Path, studies: int = 100, seed: int = 7) -> int:
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    with open(out / "check_truth.jsonl", "w", encoding="utf-8") as truth:
        for index in range(studies):
            hu, findings = draw(random.Random(f"phantom-check/{seed}/{index}"))
            name = f"dicom/check_{index:05d}.dcm"
            write(out / name, hu, index)
            truth.write(json.dumps({"id": f"check_{index:05d}", "dicom": name, "findings": findings}) + "\n")
    return studies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.phantom_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--studies", type=int, default=100)
    args = parser.parse_args(argv)
    return 0 if build_check(Path(args.out), args.studies) else 1


if __name__ == "__main__":
    raise SystemExit(main())
