"""pydicom's bundled sample files for the DICOM tests (nothing is downloaded)."""

from __future__ import annotations

import io
import warnings

import pydicom
from pydicom.data import get_testdata_file


def sample(name: str) -> str:
    return get_testdata_file(name)


def sample_bytes(name: str, **changes: object) -> bytes:
    """A bundled file, with attributes changed, as bytes."""
    dataset = pydicom.dcmread(sample(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some changes are deliberately invalid values
        for keyword, value in changes.items():
            if value is None:
                delattr(dataset, keyword)
            else:
                setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()
