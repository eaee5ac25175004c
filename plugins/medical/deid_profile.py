"""The fixed vocabulary of DICOM de-identification: which attribute gets which action, and which words a
description may keep.

``BASIC_PROFILE`` transcribes PS3.15 Annex E Table E.1-1 for the attributes of image objects;
``DESCRIPTOR_VOCABULARY`` and ``MEASUREMENT`` are the Clean Descriptors option's allow-list. They live
apart from ``plugins.medical.deid`` so the table can be reviewed against the standard line by line,
without the code that applies it. This module holds data only: it knows nothing of pydicom or
dicognito, and applies nothing.
"""

from __future__ import annotations

import re

# PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality Profile), the rows that occur in
# image objects. Actions: X remove; Z keep with an empty value; D a consistent dummy, which dicognito
# writes (a pseudonym, a shifted date): only for PN, DA, DT, TM or an ID in PSEUDONYMISED_IDS;
# C clean (only words of DESCRIPTOR_VOCABULARY survive); K keep. Where the table allows a choice
# (X/Z, X/Z/D) this takes X, since an image for the model needs none of them; where it says D for an
# SR or graphics sequence (ContentSequence, GraphicAnnotationSequence) this removes it. UIDs (U) are
# not listed: dicognito replaces every instance UID consistently and keeps class and syntax UIDs.
BASIC_PROFILE: dict[str, str] = {
    # the patient
    **dict.fromkeys(("PatientName", "PatientID"), "D"),
    **dict.fromkeys(("PatientBirthDate",), "Z"),
    **dict.fromkeys(("PatientSex", "PatientAge", "PatientSize", "PatientWeight"), "K"),  # Retain Patient Characteristics
    **dict.fromkeys((
        "OtherPatientNames", "OtherPatientIDs", "OtherPatientIDsSequence", "PatientBirthName", "PatientMotherBirthName",
        "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "CountryOfResidence",
        "RegionOfResidence", "PatientComments", "AdditionalPatientHistory", "MedicalAlerts", "Allergies", "EthnicGroup",
        "Occupation", "PatientReligiousPreference", "BranchOfService", "MilitaryRank", "MedicalRecordLocator",
        "ResponsiblePerson", "ResponsibleOrganization", "PatientInsurancePlanCodeSequence", "InsurancePlanIdentification",
        "PatientPrimaryLanguageCodeSequence", "PatientState", "PatientTransportArrangements", "PregnancyStatus",
        "SmokingStatus", "LastMenstrualDate", "SpecialNeeds", "PreMedication", "PatientSexNeutered", "IssuerOfPatientID",
        "ReferencedPatientSequence", "ReferencedPatientPhotoSequence", "ReferencedPatientAliasSequence",
        "PatientInstitutionResidence", "CurrentPatientLocation",
    ), "X"),
    # the visit and the order
    **dict.fromkeys(("AccessionNumber", "StudyID"), "D"),
    **dict.fromkeys(("PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest"), "Z"),
    **dict.fromkeys((
        "AdmissionID", "IssuerOfAdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDate", "AdmittingTime",
        "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "DischargeDate", "DischargeTime",
        "DischargeDiagnosisDescription", "ServiceEpisodeID", "ServiceEpisodeDescription", "IssuerOfServiceEpisodeID",
        "VisitComments", "ReasonForVisit", "ReasonForVisitCodeSequence", "RequestAttributesSequence",
        "RequestedProcedureID", "RequestedProcedureComments", "RequestedContrastAgent", "RequestedProcedureLocation",
        "ReasonForStudy", "ReasonForTheRequestedProcedure", "ReasonForRequestedProcedureCodeSequence",
        "ReasonForTheImagingServiceRequest", "ImagingServiceRequestComments", "IssueDateOfImagingServiceRequest",
        "IssueTimeOfImagingServiceRequest", "OrderEnteredBy", "OrderEntererLocation", "OrderCallbackPhoneNumber",
        "OrderCallbackTelecomInformation", "ScheduledProcedureStepID", "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
        "CommentsOnThePerformedProcedureStep", "StudyIDIssuer", "ReferencedStudySequence",
        "ReferencedPerformedProcedureStepSequence", "StudyComments", "StudyArrivalDate", "StudyArrivalTime",
        "StudyCompletionDate", "StudyCompletionTime", "StudyVerifiedDate", "StudyVerifiedTime", "StudyReadDate",
        "StudyReadTime", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    ), "X"),
    # people who ordered, performed or read the study
    **dict.fromkeys(("VerifyingObserverName", "PersonName"), "D"),
    **dict.fromkeys(("ReferringPhysicianName", "ConsultingPhysicianName", "ContentCreatorName", "ReviewerName"), "Z"),
    **dict.fromkeys((
        "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
        "ConsultingPhysicianIdentificationSequence", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
        "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
        "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName",
        "ScheduledPerformingPhysicianIdentificationSequence", "HumanPerformerName", "HumanPerformerOrganization",
        "ActualHumanPerformersSequence", "ScheduledHumanPerformersSequence", "PersonAddress", "PersonTelephoneNumbers",
        "PersonTelecomInformation", "NamesOfIntendedRecipientsOfResults",
        "IntendedRecipientsOfResultsIdentificationSequence", "AuthorObserverSequence", "ParticipantSequence",
        "CustodialOrganizationSequence", "ContentCreatorIdentificationCodeSequence", "VerifyingOrganization",
    ), "X"),
    # the institution and the equipment
    **dict.fromkeys((
        "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
        "InstitutionalDepartmentTypeCodeSequence", "StationName", "StationAETitle", "DeviceSerialNumber", "DetectorID",
        "GantryID", "GeneratorID", "CassetteID", "PlateID", "ModifyingDeviceID", "UniqueDeviceIdentifier", "UDISequence",
        "XRayDetectorLabel", "TransducerIdentificationSequence", "PerformedStationName", "PerformedStationAETitle",
        "PerformedStationNameCodeSequence", "PerformedStationGeographicLocationCodeSequence", "PerformedLocation",
        "ScheduledStationName", "ScheduledStationAETitle", "ScheduledStationNameCodeSequence",
        "ScheduledStationGeographicLocationCodeSequence", "RetrieveAETitle", "NetworkID",
        "SourceApplicationEntityTitle",  # file meta; not in Table E.1-1, removed as the sending device's name
    ), "X"),
    # dates and times: the study's own are shifted (Modified Dates option), the rest removed
    **dict.fromkeys((
        "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
        "AcquisitionDateTime", "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
    ), "D"),
    **dict.fromkeys((
        "TimezoneOffsetFromUTC", "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "DateOfLastCalibration",
        "TimeOfLastCalibration", "DateTimeOfLastCalibration", "ContrastBolusStartTime", "ContrastBolusStopTime",
        "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStopTime", "RadiopharmaceuticalStartDateTime",
        "RadiopharmaceuticalStopDateTime", "CurveDate", "CurveTime", "OverlayDate", "OverlayTime",
        "InstanceCoercionDateTime",
    ), "X"),
    # descriptions (Clean Descriptors option) and free text
    **dict.fromkeys((
        "StudyDescription", "SeriesDescription", "ProtocolName", "PerformedProcedureStepDescription",
        "RequestedProcedureDescription", "ScheduledProcedureStepDescription",
    ), "C"),
    **dict.fromkeys(("ContrastBolusAgent",), "Z"),
    **dict.fromkeys((
        "ImageComments", "FrameComments", "IdentifyingComments", "AcquisitionComments", "DerivationDescription",
        "AcquisitionDeviceProcessingDescription", "AcquisitionProtocolDescription", "ContributionDescription",
        "ModifiedImageDescription", "TextComments", "TextString", "Arbitrary", "ImagePresentationComments",
        "TopicTitle", "TopicSubject", "TopicAuthor", "TopicKeywords", "Impressions", "InterpretationText",
        "InterpretationAuthor", "InterpretationDiagnosisDescription", "InterpretationRecorder",
        "InterpretationTranscriber", "InterpretationApproverSequence", "PhysicianApprovingInterpretation",
        "ResultsComments", "ResultsDistributionListSequence", "DistributionName", "DistributionAddress",
        "CommentsOnRadiationDose", "RequestedSeriesDescription", "ContentSequence", "GraphicAnnotationSequence",
        "AcquisitionContextSequence", "IconImageSequence",
    ), "X"),
    # clinical trials, specimens, labels and cameras
    **dict.fromkeys((
        "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
        "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID",
        "ClinicalTrialTimePointDescription", "ClinicalTrialCoordinatingCenterName", "ClinicalTrialSeriesID",
        "ClinicalTrialSeriesDescription", "ClinicalTrialProtocolEthicsCommitteeName",
        "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "SpecimenIdentifier", "SpecimenAccessionNumber",
        "ContainerIdentifier", "BarcodeValue", "LabelText", "XRayDetectorID", "XRaySourceID", "DeviceLabel",
        "DeviceDescription", "LongDeviceDescription", "CameraOwnerName", "LensSerialNumber",
    ), "X"),
    # signatures and audit trails would carry the original values
    **dict.fromkeys((
        "DigitalSignaturesSequence", "MAC", "ReferencedDigitalSignatureSequence", "ReferencedSOPInstanceMACSequence",
        "OriginalAttributesSequence", "ModifiedAttributesSequence", "DataSetTrailingPadding",
    ), "X"),
}

# The unstructured IDs dicognito's IDAnonymizer replaces with consistent pseudonyms (a D action may name them).
PSEUDONYMISED_IDS = frozenset({
    "AccessionNumber", "OtherPatientIDs", "FillerOrderNumberImagingServiceRequest", "FillerOrderNumberProcedure",
    "PatientID", "PerformedProcedureStepID", "PlacerOrderNumberImagingServiceRequest", "PlacerOrderNumberProcedure",
    "RequestedProcedureID", "ScheduledProcedureStepID", "StationName", "StudyID",
})

# Clean Descriptors: a description keeps only these words (and short measurements such as 5MM or 3D),
# so a name, a date or an ID typed into it cannot survive, whatever it looks like.
DESCRIPTOR_VOCABULARY = frozenset("""
    CT MR MRI PET SPECT NM US XR CR DX MG RF XA CTA MRA MRV DSA PT OT SC
    HEAD BRAIN SKULL FACE ORBIT ORBITS SINUS SINUSES NECK THYROID CHEST THORAX LUNG LUNGS HEART CARDIAC CORONARY
    AORTA BREAST ABDOMEN ABD PELVIS ABDOMINAL PELVIC LIVER SPLEEN KIDNEY KIDNEYS RENAL PANCREAS BLADDER PROSTATE
    UTERUS OVARY BOWEL COLON SPINE CERVICAL THORACIC LUMBAR SACRUM SPINAL SHOULDER ARM ELBOW WRIST HAND FINGER HIP
    KNEE LEG ANKLE FOOT TOE FEMUR TIBIA HUMERUS EXTREMITY EXTREMITIES JOINT WHOLE BODY VASCULAR ARTERY VEIN
    LEFT RIGHT BILATERAL LT RT UPPER LOWER
    AX AXIAL SAG SAGITTAL COR CORONAL OBL OBLIQUE MPR MIP VR RECON REFORMAT SCOUT LOCALIZER LOCALISER TOPOGRAM SURVEY
    T1 T2 PD FLAIR DWI DTI ADC SWI GRE SE TSE FSE STIR FS FAT SAT WATER DIXON EPI BOLD PERFUSION DIFFUSION SPGR
    MPRAGE TOF HASTE TRUFI CINE ANGIO ANGIOGRAPHY VENOGRAPHY ARTERIAL VENOUS PORTAL DELAYED PHASE EARLY LATE
    CONTRAST NONCONTRAST WITH WITHOUT AND OR IV ORAL PRE POST GAD GADOLINIUM ENHANCED UNENHANCED
    ROUTINE STANDARD PROTOCOL SCREENING STAGING FOLLOW UP LOW HIGH DOSE RESOLUTION HELICAL SPIRAL THIN THICK SLICE
    SLICES BONE SOFT TISSUE WINDOW LUNG MEDIASTINUM KERNEL SHARP SMOOTH ISO ISOTROPIC VOLUME SERIES IMAGE IMAGES
    VIEW VIEWS AP PA LAT LATERAL FRONTAL SUPINE PRONE ERECT INSPIRATION EXPIRATION
""".split())
MEASUREMENT = re.compile(r"\d{1,3}(?:\.\d{1,2})?(?:MM|CM|D|T|S|MS|KV|MA)?")

# Codes of PS3.16 CID 7050 for DeidentificationMethodCodeSequence.
PROFILE_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
