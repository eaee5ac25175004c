"""Synthetic CT phantoms: a domain the project can be honest about, written as real DICOM with fake PHI.

No radiology model ships in any package, so the medical-report example trains on scans whose truth
is known exactly. A phantom is one axial "abdominal" CT slice in Hounsfield units (HU): a body
outline with a fat layer, a liver on the patient's right, a spleen on the left, two kidneys, the
spine and the aorta, each placed and sized with some jitter, then 0-3 round lesions (at most one per
organ) of known organ, diameter and density (darker or brighter than the organ), blurred at the edge,
and acquisition noise. Radiological convention: the patient's right is the picture's left.

Every phantom is written as a CT Image Storage DICOM file (16-bit, rescale intercept -1024, an
abdomen window) whose tags carry fake PHI (name, ID, birth date, address, accession number,
referring physician, institution, a name in the study description and in a private tag), unique
per study, so de-identification can be tested on it. Training rows use the *de-identified* frame as
``plugins.medical.dicom_io.load_study`` makes it for the plugin: one pixel path for training and serving.

This module knows nothing about models. ``training.recipes.build_phantom`` builds data and adapter.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 224                 # pixels per side: the image encoder's input, so nothing is resampled
SPACING_MM = 1.75          # pixel spacing: a 392 mm field of view
ORGANS = ("liver", "spleen", "right kidney", "left kidney")
# centre (x, y) and semi-axes (a, b) in pixels, and HU; the jitter moves and scales them per phantom
ANATOMY = {
    "liver": ((74, 104), (40, 33), 75),
    "spleen": ((160, 98), (19, 24), 62),
    "right kidney": ((78, 152), (13, 19), 150),
    "left kidney": ((146, 152), (13, 19), 150),
}
LESION_MM = {"liver": (8.0, 40.0), "spleen": (8.0, 28.0), "right kidney": (8.0, 22.0), "left kidney": (8.0, 22.0)}
SIZE_WORDS = ((12.0, "tiny"), (18.0, "small"), (26.0, "medium"), (1e9, "large"))  # region words by diameter
WINDOW = (40.0, 400.0)     # abdomen window centre/width written in the files
INTERCEPT = -1024.0


@dataclass(frozen=True)
class Lesion:
    organ: str
    centre: tuple[float, float]   # pixels
    diameter_mm: float
    delta_hu: float               # lesion HU minus organ HU: < 0 darker (hypodense), > 0 brighter

    @property
    def density(self) -> str:
        return "hypodense" if self.delta_hu < 0 else "hyperdense"

    @property
    def conspicuous(self) -> bool:
        """Large and high-contrast enough that a reader would be confident."""
        return self.diameter_mm >= 15 and abs(self.delta_hu) >= 40

    def box(self) -> tuple[float, float, float, float]:
        """Its bounding box as fractions of the picture."""
        r = self.diameter_mm / SPACING_MM / 2
        x, y = self.centre
        return (max(0.0, (x - r) / SIZE), max(0.0, (y - r) / SIZE), min(1.0, (x + r) / SIZE), min(1.0, (y + r) / SIZE))


@dataclass(frozen=True)
class Phantom:
    organs: dict[str, tuple[tuple[float, float], tuple[float, float], float]]   # name -> (centre, axes, HU)
    body: tuple[tuple[float, float], tuple[float, float]]
    lesions: tuple[Lesion, ...]
    noise_hu: float

    def findings(self) -> list[dict[str, Any]]:
        """The truth as the report schema's findings (``plugins.medical.report.Finding``), in organ order."""
        by_organ = {lesion.organ: lesion for lesion in self.lesions}
        return [
            {"location": organ, "description": f"{by_organ[organ].density} lesion",
             "size_mm": round(by_organ[organ].diameter_mm), "confidence": "high" if by_organ[organ].conspicuous else "medium"}
            for organ in ORGANS if organ in by_organ
        ]


def make_phantom(rng: random.Random, lesions: int | None = None) -> Phantom:
    """A random phantom; ``lesions`` fixes how many (0-3), else 0-3 with 0 a quarter of the time."""
    scale = rng.uniform(0.9, 1.08)
    dx, dy = rng.uniform(-6, 6), rng.uniform(-5, 5)
    organs = {}
    for name, ((x, y), (a, b), hu) in ANATOMY.items():
        s = scale * rng.uniform(0.9, 1.1)
        organs[name] = ((112 + (x - 112) * scale + dx + rng.uniform(-3, 3), 118 + (y - 118) * scale + dy + rng.uniform(-3, 3)),
                        (a * s, b * s), hu + rng.uniform(-8, 8))
    body = ((112 + dx, 120 + dy), (100 * scale, 76 * scale))
    count = rng.choice((0, 1, 1, 2, 2, 3, 3, 1)) if lesions is None else lesions
    found = []
    for organ in rng.sample(ORGANS, count):
        (cx, cy), (a, b), _ = organs[organ]
        low, high = LESION_MM[organ]
        diameter = rng.uniform(low, min(high, 1.5 * min(a, b) * SPACING_MM))
        room_x, room_y = max(a - diameter / SPACING_MM / 2 - 2, 0), max(b - diameter / SPACING_MM / 2 - 2, 0)
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.8)
        centre = (cx + np.cos(angle) * room_x * reach, cy + np.sin(angle) * room_y * reach)
        delta = rng.choice((-1, 1)) * rng.uniform(25, 70)
        found.append(Lesion(organ, (float(centre[0]), float(centre[1])), round(diameter, 1), round(delta, 1)))
    return Phantom(organs, body, tuple(found), rng.uniform(6, 18))


def _ellipse(x: np.ndarray, y: np.ndarray, centre, axes) -> np.ndarray:
    return ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 <= 1.0


def render_hu(phantom: Phantom, seed: int) -> np.ndarray:
    """The phantom as a (SIZE, SIZE) float32 array of HU (air -1000 outside the body)."""
    from scipy.ndimage import gaussian_filter

    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = np.full((SIZE, SIZE), -1000.0, np.float32)
    (bx, by), (ba, bb) = phantom.body
    image[_ellipse(x, y, (bx, by), (ba, bb))] = -100.0                        # subcutaneous fat
    image[_ellipse(x, y, (bx, by), (ba - 8, bb - 8))] = 30.0                  # soft tissue
    image[_ellipse(x, y, (bx, by + bb * 0.62), (12, 11))] = 700.0             # vertebral body
    image[_ellipse(x, y, (bx + 5, by + bb * 0.3), (6, 6))] = 180.0            # aorta
    for name in ORGANS:
        centre, axes, hu = phantom.organs[name]
        image[_ellipse(x, y, centre, axes)] = hu
    for lesion in phantom.lesions:
        r = lesion.diameter_mm / SPACING_MM / 2
        disc = (_ellipse(x, y, lesion.centre, (r, r))).astype(np.float32)
        image += gaussian_filter(disc, 0.8) * lesion.delta_hu
    image = gaussian_filter(image, 0.6)
    noise = np.random.default_rng(seed).normal(0.0, phantom.noise_hu, image.shape).astype(np.float32)
    return image + gaussian_filter(noise, 0.7) * 1.6


# ---------------------------------------------------------------------------------------------- fake PHI

_SYLLABLES = ("ka", "lo", "mir", "ven", "tas", "quor", "bel", "dri", "nox", "pha", "sel", "tum", "zor", "wyn", "ely", "gar", "fen", "rud")


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def fake_identity(rng: random.Random, index: int) -> dict[str, str]:
    """Made-up PHI, unique per ``index`` (the index is spelled into each value) so a leak can be searched for."""
    tag = "".join("bcdfghjklmnpqrstvwz"[int(d)] for d in f"{index:05d}")
    given, family = _word(rng, 2) + tag[:2], _word(rng, 2) + tag[2:]
    birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(0, 70 * 365))
    return {
        "name": f"{given} {family}", "dicom_name": f"{family}^{given}", "patient_id": f"PH{index:05d}{rng.randrange(10**5):05d}",
        "birth_date": birth.strftime("%Y%m%d"), "birth_text": birth.strftime("%d %B %Y"),
        "address": f"{rng.randrange(10, 9999)} {_word(rng, 2)}{tag} Street, {_word(rng, 2)}ville",
        "accession": f"AC{rng.randrange(10**7):07d}{index:05d}", "physician": f"{_word(rng, 2)}{tag}^{_word(rng, 1)}",
        "phone": f"555-{rng.randrange(100, 999)}-{index % 10000:04d}",
        "institution": f"{_word(rng, 2)}{tag} General Hospital",
    }


def write_dicom(path: Path, hu: np.ndarray, identity: dict[str, str], study_index: int, rng: random.Random) -> None:
    """``hu`` as a CT Image Storage file (uint16 stored, intercept -1024) with ``identity`` in its tags."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"phantom-sop-{study_index}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    study_date = datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randrange(0, 700))
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"phantom-study-{study_index}"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"phantom-series-{study_index}"])
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "ABDOMEN", "Phantom Works"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = identity["dicom_name"], identity["patient_id"], identity["birth_date"]
    ds.PatientSex, ds.PatientAddress = rng.choice(("F", "M", "O")), identity["address"]
    ds.PatientTelephoneNumbers = identity["phone"]
    ds.AccessionNumber, ds.ReferringPhysicianName = identity["accession"], identity["physician"]
    ds.InstitutionName = identity["institution"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"
    ds.StudyDescription = f"CT ABDOMEN for {identity['name']}"
    ds.SeriesDescription, ds.StudyID = "AXIAL 5MM", f"{study_index}"
    ds.PatientComments = f"Call {identity['phone']} before the visit"
    ds.InstanceNumber, ds.SeriesNumber = 1, 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [-196.0, -196.0, 0.0], [1, 0, 0, 0, 1, 0]
    ds.SliceThickness, ds.PixelSpacing = 5.0, [SPACING_MM, SPACING_MM]
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1.0, "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    ds.BurnedInAnnotation = "NO"
    block = ds.private_block(0x0011, "PHANTOM WORKS", create=True)
    block.add_new(0x01, "LO", identity["name"])                               # PHI hidden where vendors hide it
    stored = np.clip(np.round(hu - INTERCEPT), 0, 4095).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def truth_record(phantom: Phantom) -> dict[str, Any]:
    return {"lesions": [dataclasses.asdict(lesion) for lesion in phantom.lesions], "findings": phantom.findings(),
            "noise_hu": round(phantom.noise_hu, 1)}
