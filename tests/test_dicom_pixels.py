"""DICOM pixel values to 8-bit frames (plugins.medical.pixels through load_study): windows, VOI LUTs,
MONOCHROME1, functional groups, multi-frame sampling and colour, on pydicom's bundled samples."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from dicom_samples import sample, sample_bytes
from plugins.medical.dicom_io import load_study


def test_ct_window_gives_a_varied_8_bit_picture():
    study = load_study(sample("CT_small.dcm"))
    frame = study.frames[0]
    assert frame.mode == "L" and frame.size == (128, 128)
    assert len(np.unique(np.asarray(frame))) > 100
    assert study.modality == "CT" and study.pixel_spacing_mm == pytest.approx((0.661468, 0.661468))
    assert study.slice_thickness_mm == 5.0 and study.window is not None


def test_a_reading_window_replaces_the_stored_one_for_ct_only():
    stored = load_study(sample("CT_small.dcm"))
    read = load_study(sample("CT_small.dcm"), ct_window=(80.0, 200.0))
    dataset = pydicom.dcmread(sample("CT_small.dcm"))
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    pixels = np.asarray(read.frames[0])
    assert read.window == (80.0, 200.0) and stored.window != read.window
    assert (pixels[hu <= -21] == 0).all() and (pixels[hu > 180] == 255).all()
    mr = load_study(sample("MR_small.dcm"), ct_window=(80.0, 200.0))  # MR values are not HU: its own window stays
    assert mr.window == load_study(sample("MR_small.dcm")).window


def test_monochrome1_is_inverted():
    normal = np.asarray(load_study(sample("MR_small.dcm")).frames[0], dtype=int)
    inverted = np.asarray(load_study(sample_bytes("MR_small.dcm", PhotometricInterpretation="MONOCHROME1")).frames[0], dtype=int)
    assert np.abs(inverted - (255 - normal)).max() <= 1


def test_window_maps_values_outside_it_to_black_and_white():
    study = load_study(sample_bytes("MR_small.dcm", WindowCenter=600, WindowWidth=200))
    dataset = pydicom.dcmread(sample("MR_small.dcm"))
    values = dataset.pixel_array * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))
    pixels = np.asarray(study.frames[0])
    assert (pixels[values <= 499] == 0).all() and (pixels[values > 700] == 255).all()
    assert study.window == (600.0, 200.0)


def test_window_in_shared_functional_groups_is_used():
    plain = np.asarray(load_study(sample_bytes("MR_small.dcm", WindowCenter=600, WindowWidth=200)).frames[0])
    dataset = pydicom.dcmread(sample("MR_small.dcm"))
    voi, groups = pydicom.Dataset(), pydicom.Dataset()
    voi.WindowCenter, voi.WindowWidth = 600, 200
    groups.FrameVOILUTSequence = [voi]
    dataset.SharedFunctionalGroupsSequence = [groups]
    del dataset.WindowCenter, dataset.WindowWidth
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    enhanced = load_study(buffer.getvalue())
    assert np.array_equal(np.asarray(enhanced.frames[0]), plain) and enhanced.window == (600.0, 200.0)


def test_multi_frame_is_sampled_evenly_with_first_and_last():
    study = load_study(sample("rtdose.dcm"), max_frames=4)
    assert study.source_frames == 15 and len(study.frames) == 4
    doses = pydicom.dcmread(sample("rtdose.dcm")).pixel_array.astype(float)  # (15, 10, 10)
    stretched = [(dose - dose.min()) * 255 / np.ptp(dose) for dose in doses]  # min-max: no window in the file
    for frame, index in zip(study.frames, [0, 5, 9, 14]):
        pixels = np.asarray(frame, dtype=float)
        assert np.abs(pixels - stretched[index]).max() <= 0.5 + 1e-6, index
        assert np.abs(pixels - stretched[index - 1 if index else 1]).max() > 1, index  # frames differ: the index matters


def test_voi_lut_sequence_is_applied():
    dataset = pydicom.dcmread(sample("MR_small.dcm"))
    lut = pydicom.Dataset()
    lut.add_new("LUTDescriptor", "US", [4096, 0, 12])
    lut.add_new("LUTData", "US", [4095 - index for index in range(4096)])  # inverting: only applying it gives this
    dataset.VOILUTSequence = [lut]
    del dataset.WindowCenter, dataset.WindowWidth
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    pixels = np.asarray(load_study(buffer.getvalue()).frames[0], dtype=float)
    expected = (4095 - np.clip(dataset.pixel_array.astype(float), 0, 4095)) * 255 / 4095
    assert np.abs(pixels - expected).max() <= 0.5 + 1e-6


def test_colour_multi_frame_and_palette_give_rgb():
    study = load_study(sample("examples_ybr_color.dcm"), burned_in="mask", max_frames=3)
    assert [frame.mode for frame in study.frames] == ["RGB"] * 3 and study.source_frames == 30 and study.window is None
    palette = load_study(sample_bytes("examples_palette.dcm", BurnedInAnnotation="NO")).frames[0]
    assert palette.mode == "RGB" and len(np.unique(np.asarray(palette).reshape(-1, 3), axis=0)) > 10
