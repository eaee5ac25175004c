"""De-identify a DICOM dataset in place before any of it reaches a model, a log line or a file.

The target is the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, with three
of its options: Clean Descriptors (descriptions keep only words of a fixed imaging vocabulary),
Retain Longitudinal Temporal Information with Modified Dates (every date shifted by one offset per
seed) and Retain Patient Characteristics (sex, age, size, weight; an age over 89 becomes 90Y).

Library: dicognito (pure Python on pydicom, VR-driven, seedable) gives consistent pseudonyms for
every PN, instance UI, DA/DT/TM, ID, address and institution, so the files of one series stay
linked. pydicom/deid was not chosen: its default recipe is a header list of REMOVE rules plus
CTP pixel-cleaning coordinates for known scanner models, and it pulls in matplotlib.

This module completes what dicognito does not: it removes every private tag, applies
``BASIC_PROFILE`` (keyword -> action, from PS3.15 Table E.1-1; it and the descriptor vocabulary live
in ``plugins.medical.deid_profile``), removes all remaining free text, empties dates and times
dicognito could not shift (malformed, or a time without its date), honours burned-in annotation
and sets PatientIdentityRemoved. Afterwards it checks that no identifying value of the original is
left in any string element (as a whole word; instance UIDs whole) and refuses the dataset if one is.
The check fails closed: a patient named like a kept coding scheme ("Test" beside
CodingSchemeDesignator "TEST") is refused rather than passed on.

Burned-in text: a dataset whose BurnedInAnnotation is YES, or is missing on a modality that
usually burns text into its pixels (``BURNED_IN_MODALITIES``, and any Secondary Capture), is
refused by default; ``burned_in="mask"`` blacks out the top and bottom ``MASK_BAND`` of every frame
instead. This cannot promise to remove all text: that is why refusing is the default.

It knows nothing about windowing or the model: ``plugins.medical.dicom_io`` turns pixels into frames.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from datetime import datetime
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from assistant.errors import AssistantError
from plugins.medical.deid_profile import (
    BASIC_PROFILE,
    DESCRIPTOR_VOCABULARY,
    MEASUREMENT,
    PROFILE_CODES,
    PSEUDONYMISED_IDS,
)

logger = logging.getLogger(__name__)

BURNED_IN_POLICIES = ("refuse", "mask")
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XA", "RF", "ES", "XC"})  # missing flag counts as YES
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SOP classes of screenshots and scanned pages
MASK_BAND = 0.12  # fraction of the rows blacked out at the top and again at the bottom
MIN_VALUE_LENGTH = 3  # shorter strings ("M", "Dr") are too common to test for leaks
_TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})  # scanned for leaks
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_IDENTIFYING_TEXT_VRS = frozenset({"AE", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
_COUNTED = re.compile(r"^(?P<label>.+) \((?P<count>\d+)\)$")


@dataclass(frozen=True)
class DeidReport:
    """What de-identification did, in words that never repeat a value ("names replaced (3)")."""

    actions: tuple[str, ...]
    files: int = 1

    def summary(self) -> str:
        """One line for the chat and the draft report."""
        files = "1 file" if self.files == 1 else f"{self.files} files"
        return f"De-identified ({files}, DICOM PS3.15 basic profile): " + "; ".join(self.actions) + "."

    @classmethod
    def combine(cls, reports: Iterable[DeidReport]) -> DeidReport:
        """One report for a series: counted actions add up, the others appear once, in first-seen order."""
        counts: dict[str, int | None] = {}
        files = 0
        for report in reports:
            files += report.files
            for action in report.actions:
                match = _COUNTED.match(action)
                label, count = (match["label"], int(match["count"])) if match else (action, None)
                if count is None or counts.get(label) is None:
                    counts.setdefault(label, count)
                else:
                    counts[label] += count
        actions = tuple(label if count is None else f"{label} ({count})" for label, count in counts.items())
        return cls(actions, files)


@dataclass(frozen=True)
class _Identifiers:
    """The identifying values of a dataset, split by how a leak of each is looked for."""

    texts: frozenset[str]  # whole values: full names, IDs, dates, addresses, free text
    name_parts: frozenset[str]  # family and given names, searched everywhere except in pseudonymised names
    uids: frozenset[str]  # instance UIDs, compared whole in UI elements only


def identifying_values(dataset: Any) -> set[str]:
    """The PHI string values (names and their parts, IDs, dates, addresses, phones, free text, instance UIDs)
    of ``dataset`` and its file meta, recursively, that are at least three characters long: take them
    BEFORE de-identification to check afterwards that none is left."""
    found = _identifiers(dataset)
    return set(found.texts | found.name_parts | found.uids)


def deidentify(dataset: Any, *, seed: str | None = None, burned_in: str = "refuse") -> DeidReport:
    """De-identify ``dataset`` in place (PS3.15 basic profile) and check that no identifying value is left.

    Args:
        dataset: A pydicom Dataset, pixel data not yet decoded.
        seed: Makes the pseudonyms and the date shift reproducible; the files of one series must share it.
        burned_in: "refuse" a scan with burned-in text, or "mask" the top and bottom bands of its frames.

    Raises:
        AssistantError: The scan has burned-in text (policy "refuse"), it cannot be masked, or an
            identifying value survived (the message names the attribute, never the value).
    """
    if burned_in not in BURNED_IN_POLICIES:
        raise AssistantError(f"burned_in must be one of {', '.join(BURNED_IN_POLICIES)}, not {burned_in!r}")
    with quiet_pydicom():
        has_text = has_burned_in_text(dataset)
        if has_text and burned_in == "refuse":
            raise AssistantError(
                "the scan has burned-in text (BurnedInAnnotation YES, or not stated for its kind of image) and was "
                "not used; pass burned_in='mask' to black out the top and bottom bands of its frames"
            )
        original = _identifiers(dataset)
        tally: dict[str, int] = {}
        tally["private tags removed"] = _remove_private_tags(dataset)
        _apply_profile(dataset, original, tally)
        _pseudonymise(dataset, seed, tally)
        tally["times without a date emptied"] = _empty_unshifted_times(dataset)
        capped = _cap_age(dataset)
        masked = _mask_burned_in_text(dataset) if has_text else 0
        _mark_deidentified(dataset, masked)
        _check_no_leak(dataset, original)
    actions = [f"{label} ({count})" for label, count in tally.items() if count]
    if capped:
        actions.append("age over 89 given as 90Y")
    if masked:
        actions.append(f"burned-in text masked: top and bottom {MASK_BAND:.0%} of each frame ({masked})")
    logger.debug("de-identified a dataset: %s", "; ".join(actions))
    return DeidReport(tuple(actions))


def has_burned_in_text(dataset: Any) -> bool:
    """Whether the pixels must be assumed to carry text: BurnedInAnnotation YES, or no flag on a modality
    (or a Secondary Capture) that usually burns text in."""
    flag = str(dataset.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag:
        return flag != "NO"
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    return modality in BURNED_IN_MODALITIES or sop_class.startswith(SECONDARY_CAPTURE_PREFIX)


def clean_descriptor(text: str, avoid: Iterable[str] = ()) -> str:
    """``text`` reduced to the words of ``DESCRIPTOR_VOCABULARY`` and short measurements, minus any in ``avoid``."""
    spelled = re.sub(r"\bW/O\b|\bWO\b", " WITHOUT ", text.upper())
    spelled = re.sub(r"\bW/", " WITH ", spelled)
    avoided = {value.upper() for value in avoid}
    words = re.findall(r"[A-Z0-9]+(?:\.[0-9]+)?", spelled)
    kept = [word for word in words if (word in DESCRIPTOR_VOCABULARY or MEASUREMENT.fullmatch(word)) and word not in avoided]
    return " ".join(kept)


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records while headers are handled: they quote invalid values,
    which may be a patient's. (Process-wide while active, like ``warnings.catch_warnings``.)"""
    names = ["pydicom"] + [name for name in logging.Logger.manager.loggerDict if name.startswith("pydicom.")]
    loggers = [logging.getLogger(name) for name in names]  # a logger's filter does not see its children's records

    def drop_all(record: logging.LogRecord) -> bool:
        return False

    for pydicom_logger in loggers:
        pydicom_logger.addFilter(drop_all)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for pydicom_logger in loggers:
            pydicom_logger.removeFilter(drop_all)


def _datasets(dataset: Any) -> Iterator[Any]:
    """The dataset, its file meta and every item of every sequence in them."""
    meta = getattr(dataset, "file_meta", None)
    for root in (meta, dataset):
        if root is not None:
            yield from _nested(root)


def _nested(dataset: Any) -> Iterator[Any]:
    yield dataset
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _nested(item)


def _strings(element: Any) -> list[str]:
    """The non-empty values of a string element as text (raw UN bytes decoded as Latin-1); [] for others."""
    if element.VR not in _TEXT_VRS and element.VR not in ("UI", "UN"):
        return []
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value).decode("latin-1", "replace")] if element.VR == "UN" else []
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return [str(item).strip() for item in values if str(item).strip()]


def _worth_checking(value: str) -> bool:
    return len(value) >= MIN_VALUE_LENGTH and any(character.isalnum() for character in value)


def _is_instance_uid(element: Any, value: str) -> bool:
    from pydicom.uid import UID_dictionary

    keyword = element.keyword or ""
    return not (keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID" or value in UID_dictionary)


def _identifiers(dataset: Any) -> _Identifiers:
    """Names, IDs and dates are always identifying. Other values the profile removes (an institution, a
    station, a comment) count only if no attribute the profile keeps holds them too: a removed AE title
    "GDCM" beside ImplementationVersionName "GDCM 2.4.4" is product metadata, not identity."""
    always: set[str] = set()
    removed: set[str] = set()
    kept: list[str] = []
    name_parts: set[str] = set()
    uids: set[str] = set()
    public_uids: set[str] = set()  # class and syntax UIDs, kept: an instance UID equal to one is no identity
    for item in _datasets(dataset):
        for element in item:
            if element.tag.is_private and element.VR not in ("PN", "DA", "DT"):
                continue  # removed whole; creator and product strings are not identity
            values = _strings(element)
            action = BASIC_PROFILE.get(element.keyword)
            if element.VR == "PN":
                always.update(values)
                name_parts.update(part for value in values for part in re.split(r"[\^=\s,]+", value))
            elif element.VR in ("DA", "DT") or element.keyword in PSEUDONYMISED_IDS:
                always.update(values)
            elif element.VR == "UI":
                for value in values:
                    (uids if _is_instance_uid(element, value) else public_uids).add(value)
            elif element.VR in _IDENTIFYING_TEXT_VRS and action in ("X", "Z", "D"):
                (always if action == "D" else removed).update(values)
            elif element.VR in _FREE_TEXT_VRS and action is None:
                removed.update(values)  # removed as free text beyond the table
            elif action in (None, "K") and element.VR in _TEXT_VRS:
                kept.extend(values)
    public = {value for value in removed if any(_whole_word(value).search(text) for text in kept)}
    texts = {value for value in always | (removed - public) if _worth_checking(value)}
    return _Identifiers(
        frozenset(texts),
        frozenset(part for part in name_parts - texts if _worth_checking(part)),
        frozenset(uid for uid in uids - public_uids if _worth_checking(uid)),
    )


def _remove_private_tags(dataset: Any) -> int:
    count = sum(1 for item in _datasets(dataset) for element in item if element.tag.is_private)
    dataset.remove_private_tags()
    return count


def _apply_profile(dataset: Any, original: _Identifiers, tally: dict[str, int]) -> None:
    """X, Z and C of ``BASIC_PROFILE`` at every level, overlays and curves, and any other free text."""
    removed = emptied = cleaned = 0
    avoid = original.texts | original.name_parts
    for item in list(_datasets(dataset)):
        for element in list(item):
            action = BASIC_PROFILE.get(element.keyword)
            group = element.tag.group
            if action == "X" or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:  # curves, overlay planes
                del item[element.tag]
                removed += 1
            elif action is None and element.VR in _FREE_TEXT_VRS:  # beyond the table: free text hides identity
                del item[element.tag]
                removed += 1
            elif action == "Z" and not element.is_empty:
                element.value = element.empty_value
                emptied += 1
            elif action == "C" and not element.is_empty:
                element.value = clean_descriptor(" ".join(_strings(element)), avoid)
                cleaned += 1
    tally.update({"attributes removed": removed, "attributes emptied": emptied, "descriptions cleaned": cleaned})


def _pseudonymise(dataset: Any, seed: str | None, tally: dict[str, int]) -> None:
    """dicognito: consistent pseudonyms for names, IDs and instance UIDs; every date shifted by one offset."""
    from dicognito.anonymizer import Anonymizer

    names = ids = uids = dates = malformed = 0
    for item in _datasets(dataset):
        for element in item:
            if element.VR in ("DA", "DT", "TM") and not element.is_empty and not _well_formed(element):
                element.value = element.empty_value  # dicognito cannot shift what it cannot parse
                malformed += 1
            if element.is_empty:
                continue
            if element.VR == "PN":
                names += 1
            elif element.keyword in PSEUDONYMISED_IDS:
                ids += 1
            elif element.VR == "UI" and _is_instance_uid(element, str(element.value)):
                uids += 1
            elif element.VR in ("DA", "DT"):
                dates += 1
    Anonymizer(seed=seed).anonymize(dataset)
    tally.update({"names replaced": names, "IDs replaced": ids, "UIDs replaced": uids, "dates shifted": dates})
    tally["malformed dates and times emptied"] = malformed


def _well_formed(element: Any) -> bool:
    """Whether dicognito can shift every value of a DA, DT or TM element. It parses a value up to the hour
    (a time together with its date, ACR-NEMA's "." and ":" removed) and copies the rest unchanged."""
    for value in _strings(element):
        text = value.replace(".", "") if element.VR == "DA" else value
        if element.VR == "TM":
            text = "20000101" + value.replace(":", "")
        try:
            datetime.strptime(text[:10], "%Y%m%d%H"[: len(text) - 2])
        except ValueError:
            return False
    return True


def _empty_unshifted_times(dataset: Any) -> int:
    """dicognito shifts a time only with its date (StudyTime with StudyDate); a time without one is emptied."""
    emptied = 0
    for item in _datasets(dataset):
        for element in item:
            if element.VR != "TM" or element.is_empty:
                continue
            date_keyword = (element.keyword or "").replace("Time", "Date")
            if date_keyword == element.keyword or not item.get(date_keyword):
                element.value = element.empty_value
                emptied += 1
    return emptied


def _cap_age(dataset: Any) -> bool:
    """Ages over 89 are reported as 90Y (HIPAA Safe Harbor), which Retain Patient Characteristics allows."""
    age = str(dataset.get("PatientAge", "") or "")
    if re.fullmatch(r"\d{3}Y", age) and int(age[:3]) > 89:
        dataset.PatientAge = "090Y"
        return True
    return False


def _mask_burned_in_text(dataset: Any) -> int:
    """Black out the top and bottom bands of every frame; the pixel data is rewritten uncompressed.
    BurnedInAnnotation stays as it was: text outside the bands may remain. Returns the frames masked."""
    if "PixelData" not in dataset:
        return 0
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        raise AssistantError("the scan has burned-in text and is palette-colour, which cannot be masked; it was not used")
    try:
        pixels = dataset.pixel_array  # YBR is converted to RGB
    except Exception:  # any decoder failure: the scan cannot be masked, so it must not be used
        raise AssistantError("the scan has burned-in text and its pixel data could not be decoded to mask it") from None
    if pixels.dtype.name not in ("uint8", "uint16", "int8", "int16"):
        raise AssistantError("the scan has burned-in text and only 8- or 16-bit pictures can be masked; it was not used")
    samples = int(dataset.get("SamplesPerPixel", 1))
    frames = pixels if pixels.ndim == (4 if samples > 1 else 3) else pixels[None]  # (F, H, W[, 3]), a view
    rows = frames.shape[1]
    band = math.ceil(rows * MASK_BAND)
    # the darkest value present: black under any window, and a min-max stretch of the rest is unchanged
    black = 0 if samples > 1 else (pixels.max() if photometric == "MONOCHROME1" else pixels.min())
    frames[:, :band] = black
    frames[:, rows - band :] = black
    try:  # the instance keeps its pseudonymous UID, so a seed still gives the same output
        photometric = "RGB" if samples > 1 else photometric
        dataset.set_pixel_data(pixels, photometric, int(dataset.get("BitsStored", 8)), generate_instance_uid=False)
    except (NotImplementedError, ValueError):  # e.g. big-endian data, which pydicom does not re-encode
        raise AssistantError("the scan has burned-in text and its masked pixels could not be stored; it was not used") from None
    return frames.shape[0]


def _mark_deidentified(dataset: Any, masked: int) -> None:
    from pydicom.dataset import Dataset

    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    methods = ["DICOGNITO", "PS3.15 BASIC PROFILE", "CLEAN DESCRIPTORS, MODIFIED DATES", "RETAIN PATIENT CHARACTERISTICS"]
    if masked:
        methods.append(f"BURNED-IN TEXT MASKED: TOP AND BOTTOM {MASK_BAND:.0%}")
    dataset.DeidentificationMethod = methods
    codes = []
    for value, meaning in PROFILE_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    dataset.DeidentificationMethodCodeSequence = codes


def _check_no_leak(dataset: Any, original: _Identifiers) -> None:
    """Refuse the dataset if any original identifying value is still in one of its string elements."""
    everywhere = [_whole_word(value) for value in original.texts]
    parts = [_whole_word(value) for value in original.name_parts]
    for item in _datasets(dataset):
        for element in item:
            values = _strings(element)
            if not values:
                continue
            if element.VR == "UI":
                leaked = any(value in original.uids for value in values)
            elif element.VR in _TEXT_VRS or element.VR == "UN":
                # a pseudonym drawn from dicognito's name lists may share a first name with the patient by chance
                patterns = everywhere if element.VR == "PN" else everywhere + parts
                leaked = any(pattern.search(value) for value in values for pattern in patterns)
            else:
                continue
            if leaked:
                raise AssistantError(f"de-identification left an identifying value in {element.keyword or element.tag}")


def _whole_word(value: str) -> re.Pattern[str]:
    """Finds ``value`` as a whole word, any case: "TOSHIBA" is not found in "TOSHIBA_MEC", "CT1" not in "CT12"."""
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)
