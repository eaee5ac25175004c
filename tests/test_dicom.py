"""DICOM ingest and de-identification on pydicom's bundled sample files (nothing is downloaded).

The leak tests take the identifying values of each original, save the de-identified header, read it
back and look for every value as a whole word in every string element, and in the Study's text.
"""

from __future__ import annotations

import ast
import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword

from assistant.errors import AssistantError
from plugins.medical.deid import (
    BASIC_PROFILE,
    PSEUDONYMISED_IDS,
    DeidReport,
    clean_descriptor,
    deidentify,
    identifying_values,
)
from dicom_samples import sample, sample_bytes
from plugins.medical.dicom_io import load_study, spread_indices

SAMPLES = {  # file -> burned_in policy it needs (Secondary Capture and US count as burned in)
    "CT_small.dcm": "refuse",
    "MR_small.dcm": "refuse",
    "MR_small_RLE.dcm": "refuse",  # RLE Lossless
    "MR_small_jp2klossless.dcm": "refuse",  # JPEG 2000
    "693_J2KI.dcm": "refuse",  # JPEG 2000, CT
    "JPGExtended.dcm": "mask",  # JPEG Extended, a Secondary Capture
    "examples_ybr_color.dcm": "mask",  # JPEG Baseline, 30-frame ultrasound
}
CT_NAME = "CompressedSamples^CT1"


def ct_phi() -> set[str]:
    return identifying_values(pydicom.dcmread(sample("CT_small.dcm")))


def string_values(dataset) -> list[tuple[str, str, str]]:
    """(keyword, VR, value) of every string element, file meta and sequence items included."""
    found = []
    roots = [dataset.file_meta, dataset] if getattr(dataset, "file_meta", None) is not None else [dataset]
    for root in roots:
        for element in root.iterall():
            if element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "US", "SS", "UL", "SL", "FL", "FD", "AT"):
                continue
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
            found.extend((element.keyword, element.VR, str(value)) for value in values if value not in (None, ""))
    return found


def leaks(values: set[str], texts: list[tuple[str, str, str]]) -> list[str]:
    """Which keywords hold one of ``values``: UIDs compared whole, everything else as a whole word."""
    hits = []
    for keyword, vr, text in texts:
        for value in values:
            if vr == "UI":
                hit = text == value
            else:
                hit = re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE) is not None
            if hit:
                hits.append(keyword)
    return hits


def saved_and_read_back(dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def assert_clean_error(error: pytest.ExceptionInfo, label: str) -> None:
    text = str(error.value)
    assert label in text
    assert not leaks(ct_phi() | {"Doe", "John"}, [("message", "LT", text)]), text


# --- de-identification -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_load_and_leave_no_identifying_value(name):
    original = pydicom.dcmread(sample(name))
    phi = identifying_values(original)
    assert phi, "the sample should carry identifying values to test"
    study = load_study(sample(name), burned_in=SAMPLES[name], seed="test")
    assert study.frames and study.deid is not None
    for header in study.headers:
        back = saved_and_read_back(header)
        assert leaks(phi, string_values(back)) == []
        assert back.PatientIdentityRemoved == "YES"
        assert not any(element.tag.is_private for element in back.iterall())
        assert "PixelData" not in back
    study_text = [("modality", "CS", study.modality), ("body_part", "CS", study.body_part),
                  ("description", "LO", study.description), ("summary", "LT", study.deid.summary())]
    assert leaks(phi, study_text) == []


def test_private_tags_are_counted_and_removed():
    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    private = sum(1 for element in dataset.iterall() if element.tag.is_private)
    report = deidentify(dataset, seed="s")
    assert private > 0 and f"private tags removed ({private})" in report.actions
    assert not any(element.tag.is_private for element in dataset.iterall())


def test_without_deidentification_the_patient_name_is_still_there():
    raw = load_study(sample("CT_small.dcm"), deidentify_first=False)
    assert str(raw.headers[0].PatientName) == CT_NAME and raw.deid is None
    clean = load_study(sample("CT_small.dcm"))
    assert CT_NAME not in str(clean.headers[0].PatientName)


def test_pseudonyms_and_date_shift_are_consistent_for_one_seed():
    first = load_study(sample("CT_small.dcm"), seed="same").headers[0]
    second = load_study(sample("CT_small.dcm"), seed="same").headers[0]
    other = load_study(sample("CT_small.dcm"), seed="other").headers[0]
    def identity(header):
        return header.PatientName, header.StudyDate, header.StudyInstanceUID

    assert identity(first) == identity(second)
    assert first.StudyInstanceUID != other.StudyInstanceUID
    assert first.StudyDate < "20040119"  # dicognito shifts dates back


def test_profile_actions_on_a_prepared_header():
    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    dataset.PatientComments = "lives next to the hospital"
    dataset.PerformingPhysicianName = "House^Gregory"
    dataset.StudyDescription = "CT HEAD W/O CONTRAST for CompressedSamples 1CT1"
    dataset.PatientAge = "095Y"
    dataset.StudyTime, dataset.StudyDate = "101010", ""
    report = deidentify(dataset, seed="s")
    assert "PatientComments" not in dataset and "PerformingPhysicianName" not in dataset
    assert "InstitutionName" not in dataset and "StationName" not in dataset and "ImageComments" not in dataset
    assert dataset.StudyDescription == "CT HEAD WITHOUT CONTRAST"
    assert dataset.PatientAge == "090Y" and "age over 89 given as 90Y" in report.actions
    assert dataset.StudyTime == ""  # a time with no date to shift with is emptied
    assert dataset.PatientSex == "O"  # Retain Patient Characteristics
    assert "DICOGNITO" in dataset.DeidentificationMethod
    assert [item.CodeValue for item in dataset.DeidentificationMethodCodeSequence][0] == "113100"


def test_the_leak_check_refuses_a_name_left_in_a_kept_attribute():
    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    dataset.ManufacturerModelName = "CompressedSamples scanner"  # kept by the profile, so only the check can catch it
    with pytest.raises(AssistantError, match="identifying value in ManufacturerModelName") as error:
        deidentify(dataset, seed="s")
    assert "CompressedSamples" not in str(error.value)


def test_identifying_values_cover_names_ids_dates_and_institution():
    phi = ct_phi()
    assert {CT_NAME, "CompressedSamples", "CT1", "1CT1", "20040119", "JFK IMAGING CENTER", "ABCD1234"} <= phi
    assert all(len(value) >= 3 for value in phi)


def test_clean_descriptor_keeps_only_vocabulary_words():
    assert clean_descriptor("CT Head w/o contrast JOHN SMITH 5mm 20040119") == "CT HEAD WITHOUT CONTRAST 5MM"
    assert clean_descriptor("T1 AX 3D", avoid={"3D"}) == "T1 AX"


def test_profile_table_is_well_formed():
    for keyword, action in BASIC_PROFILE.items():
        assert tag_for_keyword(keyword) is not None, keyword
        assert action in "XZDCK"
        if action == "D":  # dicognito must be the one writing the dummy
            vr = dictionary_VR(tag_for_keyword(keyword))
            assert vr in ("PN", "DA", "DT", "TM") or keyword in PSEUDONYMISED_IDS, keyword
    from dicognito.anonymizer import Anonymizer

    described = Anonymizer().describe_actions()
    for keyword in PSEUDONYMISED_IDS:
        assert f"Replace {keyword} with anonymized values" in described, keyword


def test_the_profile_module_is_the_one_deid_applies():
    from plugins.medical import deid, deid_profile

    assert deid.BASIC_PROFILE is deid_profile.BASIC_PROFILE and deid.DESCRIPTOR_VOCABULARY is deid_profile.DESCRIPTOR_VOCABULARY
    tree = ast.parse(Path(deid_profile.__file__).read_text(encoding="utf-8"))  # data only: no pydicom, no dicognito
    assert {alias.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names} <= {
        "annotations", "re"}


def test_reports_of_a_series_add_up():
    one = DeidReport(("names replaced (1)", "dates shifted (2)", "burned-in text masked"))
    both = DeidReport.combine([one, one])
    assert both.actions == ("names replaced (2)", "dates shifted (4)", "burned-in text masked") and both.files == 2
    assert both.summary().startswith("De-identified (2 files")


# --- burned-in text ---------------------------------------------------------------------------------


def test_burned_in_text_is_refused_by_default():
    with pytest.raises(AssistantError, match="burned-in text") as error:
        load_study(sample_bytes("CT_small.dcm", BurnedInAnnotation="YES"))
    assert_clean_error(error, "file 1 of 1 (bytes)")


def test_a_missing_flag_on_ultrasound_counts_as_burned_in():
    with pytest.raises(AssistantError, match="burned-in text"):
        load_study(sample("examples_ybr_color.dcm"))
    assert load_study(sample_bytes("examples_ybr_color.dcm", BurnedInAnnotation="NO"), max_frames=1).frames


def test_burned_in_text_masked_blacks_out_the_bands():
    study = load_study(sample_bytes("CT_small.dcm", BurnedInAnnotation="YES"), burned_in="mask")
    pixels = np.asarray(study.frames[0])
    band = int(np.ceil(pixels.shape[0] * 0.12))
    assert (pixels[:band] == 0).all() and (pixels[-band:] == 0).all()
    assert len(np.unique(pixels[band:-band])) > 50
    assert any("burned-in text masked" in action for action in study.deid.actions)
    assert any("MASKED" in method for method in study.headers[0].DeidentificationMethod)


# --- pixels -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("total, count, expected", [(30, 4, [0, 10, 19, 29]), (3, 8, [0, 1, 2]), (10, 1, [5]), (2, 2, [0, 1])])
def test_spread_indices(total, count, expected):
    assert spread_indices(total, count) == expected


def test_series_is_sorted_by_instance_number_then_z():
    def slice_bytes(number, z):
        dataset = pydicom.dcmread(sample("CT_small.dcm"))
        dataset.InstanceNumber = number
        dataset.ImagePositionPatient = [0, 0, z]
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        return buffer.getvalue()

    study = load_study([slice_bytes(3, 0), slice_bytes(1, 9), slice_bytes(2, 5), slice_bytes(1, -4)])
    order = [(int(header.InstanceNumber), float(header.ImagePositionPatient[2])) for header in study.headers]
    assert order == [(1, -4.0), (1, 9.0), (2, 5.0), (3, 0.0)]
    assert study.source_frames == 4 and "names replaced (4)" in study.deid.actions and study.deid.files == 4


# --- plain pictures ---------------------------------------------------------------------------------


def picture_bytes(mode: str, kind: str) -> bytes:
    array = np.arange(64 * 48 * (3 if mode == "RGB" else 1), dtype=np.uint8).reshape((48, 64, 3) if mode == "RGB" else (48, 64))
    if mode == "RGB":
        array[..., 0] = 200
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, kind)
    return buffer.getvalue()


def test_plain_pictures_load_without_deid(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(picture_bytes("L", "PNG"))
    study = load_study([path, picture_bytes("RGB", "JPEG")])
    assert [frame.mode for frame in study.frames] == ["L", "RGB"]
    assert study.modality == "OT" and study.deid is None and study.source_frames == 2


def test_a_picture_bomb_is_refused():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 900 Mpixel, grey
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(AssistantError, match="file 1 of 1 \\(bytes\\)"):
        load_study(bomb)


# --- bad input: every error names the file by place, never by name or value -----------------------


def cut(name: str, fraction: float) -> bytes:
    data = open(sample(name), "rb").read()
    return data[: int(len(data) * fraction)]


def mpeg2_ct() -> bytes:
    from pydicom.encaps import encapsulate

    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    dataset.PixelData = encapsulate([b"\x00" * 100])
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("content, problem", [
    (lambda: picture_bytes("L", "PNG"), "not a DICOM file.*PNG picture"),
    (lambda: bytes(range(256)) * 8, "not a DICOM file"),
    (lambda: sample_bytes("CT_small.dcm", PixelData=None), "no pixel data: it is a CT Image Storage object"),
    (mpeg2_ct, "MPEG2 Main Profile / Main Level"),
    (lambda: open(sample("MR_truncated.dcm"), "rb").read(), "truncated"),
    (lambda: cut("CT_small.dcm", 0.5), "truncated"),
    (lambda: cut("CT_small.dcm", 0.0256), "truncated or corrupt"),  # cut inside the header
    (lambda: b"\0" * 128 + b"DICM" + bytes(range(256)) * 4, "truncated or corrupt"),
    (lambda: sample_bytes("CT_small.dcm", WindowCenter=40, WindowWidth=0), "width must be"),
    (lambda: sample_bytes("CT_small.dcm", WindowCenter=40, WindowWidth=-400), "width must be"),
    (lambda: sample_bytes("CT_small.dcm", WindowCenter=40, WindowWidth="NaN"), "unusable"),
    (lambda: sample_bytes("CT_small.dcm", WindowCenter=1e7, WindowWidth=10), "single grey level"),
])
def test_bad_dicom_input_is_named_without_phi(tmp_path, content, problem):
    path = tmp_path / "Doe_John_1CT1.dcm"  # file names carry patient names
    path.write_bytes(content())
    with pytest.raises(AssistantError, match=problem) as error:
        load_study([path])
    assert_clean_error(error, "file 1 of 1 (.dcm)")
    assert "Doe" not in str(error.value) and str(tmp_path) not in str(error.value)


def test_random_bytes_are_neither_dicom_nor_picture():
    with pytest.raises(AssistantError, match="neither DICOM .* nor a PNG or JPEG") as error:
        load_study(b"\x00" * 500)
    assert_clean_error(error, "file 1 of 1 (bytes)")


def test_a_missing_decoder_is_named(monkeypatch):
    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg-openjpeg"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: Missing())
    with pytest.raises(AssistantError, match="JPEG 2000 Image Compression \\(Lossless Only\\).*not installed.*openjpeg"):
        load_study(sample("MR_small_jp2klossless.dcm"))


def test_corrupt_compressed_pixels_are_a_clear_error():
    with pytest.raises(AssistantError, match="pixel data could not be decoded"):
        load_study(sample_bytes("JPEG-lossy.dcm", BurnedInAnnotation="NO"))


def test_an_enormous_series_is_refused_before_reading(tmp_path):
    paths = []
    for index in range(3):
        path = tmp_path / f"Doe_{index}.dcm"
        path.write_bytes(b"not dicom at all" * 100)  # would fail if it were read
        paths.append(path)
    with pytest.raises(AssistantError, match="3 files, over the limit of 2; nothing was read"):
        load_study(paths, max_files=2)
    with pytest.raises(AssistantError, match="over the 0.003 MB limit; nothing was read"):
        load_study(paths, max_total_mb=0.003)
    with pytest.raises(AssistantError, match="decodes to 7 MB of pixels, over the 1 MB limit"):  # a 0.2 MB JPEG file
        load_study(sample("examples_ybr_color.dcm"), burned_in="mask", max_total_mb=1)


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "Doe_John.dcm"
    path.write_bytes(open(sample("CT_small.dcm"), "rb").read())
    with pytest.raises(AssistantError, match="over the 0.01 MB limit for one file") as error:
        load_study(path, max_file_mb=0.01)
    assert_clean_error(error, "file 1 of 1 (.dcm)")


def test_mixed_studies_are_refused():
    with pytest.raises(AssistantError, match="file 2 of 2 \\(.dcm\\) belongs to another study than file 1 of 2"):
        load_study([sample("CT_small.dcm"), sample("MR_small.dcm")])
    with pytest.raises(AssistantError, match="mixes DICOM files and plain pictures"):
        load_study([sample("CT_small.dcm"), picture_bytes("L", "PNG")])


@pytest.mark.parametrize("empty", [[], b"", ()])
def test_empty_input_is_refused(empty):
    with pytest.raises(AssistantError, match="no DICOM file or picture"):
        load_study(empty)


def test_a_missing_path_is_named_by_place(tmp_path):
    with pytest.raises(AssistantError, match="file 2 of 2 \\(.dcm\\) was not found") as error:
        load_study([sample("CT_small.dcm"), tmp_path / "Doe_John.dcm"])
    assert "Doe" not in str(error.value)


def test_pydicom_warnings_with_values_do_not_reach_the_log_or_warnings(caplog):
    bad_uid = "1.2.826.020040119.1"  # a leading zero: pydicom warns when it reads it, quoting it (and its date)
    data = sample_bytes("CT_small.dcm", StudyInstanceUID=bad_uid)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        study = load_study(data)
    assert study.frames
    assert "020040119" not in caplog.text and not [item for item in caught if "020040119" in str(item.message)]
    with pytest.warns(UserWarning, match="020040119"):  # without the guard the same read does quote it
        list(pydicom.dcmread(io.BytesIO(data)).iterall())


def test_malformed_dates_are_emptied_not_passed_on():
    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.StudyDate, dataset.SeriesDate = "2004-01-19", "19971345"  # ISO dashes; month 13
    report = deidentify(dataset, seed="s")
    assert dataset.StudyDate == "" and dataset.SeriesDate == "" and dataset.StudyTime == ""
    assert "malformed dates and times emptied (2)" in report.actions
