"""Medical report plugin: DICOM ingest, de-identification, structured draft reports."""
