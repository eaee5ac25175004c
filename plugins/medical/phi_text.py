"""Redact protected health information (PHI) a user typed into a chat message, before any prompt is built.

``redact_text(message)`` returns a ``Redaction``: the text with each span replaced by a typed placeholder
(``[NAME]``, ``[DATE]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[ADDRESS]``, ``[URL]``, ``[AGE]``) and a
count per kind, so the chat can say what was removed without repeating it.

Detection is Microsoft Presidio's ``AnalyzerEngine`` on a blank English spaCy pipeline (spaCy models are
not on PyPI, so none is loaded) with this module's own recognizers: regular expressions for dates, IDs,
emails, URLs, addresses and ages; ``phonenumbers`` for phone and fax numbers; and, since there is no NER
model, names found from context cues ("Mr.", "name is", "my son ...", "the report for ...") plus a gazetteer
of US census first names and surnames for capitalised pairs (``plugins.medical.phi_names``, with the clinical
allow-list that keeps "Mass", "Bell" or "Right Kidney" from being taken for people). Presidio's own email
and URL recognizers are not used: they validate with tldextract, which downloads the public suffix list.

Removed values never reach a log record, an exception or a repr: Presidio's default context enhancer
logs the words around a match at DEBUG level, so a silent one replaces it (labels such as "MRN" are
matched by look-behinds in the patterns instead). It is a safety net for free text, tuned for recall;
it does not know about DICOM headers or pixel data (other modules de-identify those).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from assistant.errors import AssistantError
from plugins.medical.phi_names import CLINICAL_WORDS, person_name_recognizer  # noqa: F401 (phi_text.CLINICAL_WORDS)

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 100_000  # a chat message; 100k chars take about a second, longer ones are refused
# Presidio entity -> placeholder kind, in the order summary() lists them.
PLACEHOLDERS = {"PERSON": "NAME", "DATE_TIME": "DATE", "MEDICAL_ID": "ID", "PHONE_NUMBER": "PHONE",
                "EMAIL_ADDRESS": "EMAIL", "STREET_ADDRESS": "ADDRESS", "URL": "URL", "AGE": "AGE"}
_NOUNS = {"NAME": "name", "DATE": "date", "ID": "ID", "PHONE": "phone number", "EMAIL": "email address",
          "ADDRESS": "address", "URL": "URL", "AGE": "age over 89"}
_PLURALS = {"email address": "email addresses", "address": "addresses", "age over 89": "ages over 89"}

_NOT_STREET = frozenset({"mm", "cm", "ml", "mg", "hu", "x", "lesion", "lesions", "mass", "masses", "nodule", "nodules",
                         "cyst", "cysts", "slice", "slices", "image", "images", "series", "segment", "level",
                         "year", "years", "month", "months", "week", "weeks", "day", "days"})


def _pattern_recognizer(entity: str, patterns: list[tuple[str, str, float]], case_sensitive: bool = False) -> Any:
    """A Presidio ``PatternRecognizer`` for ``entity`` from (name, regex, score) triples."""
    import regex
    from presidio_analyzer import Pattern, PatternRecognizer

    flags = regex.DOTALL | regex.MULTILINE | (0 if case_sensitive else regex.IGNORECASE)
    return PatternRecognizer(supported_entity=entity, name=f"{entity.lower()}_{patterns[0][0]}",
                             patterns=[Pattern(name, rx, score) for name, rx, score in patterns],
                             global_regex_flags=flags)


_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:(?:18|19|20)\d{2}|'\d{2})"
_UNITS = r"(?!\s*(?:mm|cm|ml|mg|kg|%|hu|x\b|times))"
_NUMERIC_DATE = r"(?:\d{1,2}([/.-])\d{1,2}\1(?:\d{4}|\d{2})|(?:18|19|20)\d{2}([/.-])\d{1,2}\2\d{1,2})"
_DATE_LABELS = (r"(?:DOB|D\.O\.B\.?|date of birth|birth ?date|birthday|born(?: on| in)?|date of service|DOS"
                r"|admitted(?: on)?|discharged(?: on)?|died(?: on)?|deceased|dated?|seen on)")
_AGE = r"(?:9\d|1[01]\d|12[0-5])"
_ID_LABELS = (r"(?:MRN|M\.R\.N\.?|medical record(?: number| no\.?)?|record(?: number| no\.?)|chart(?: number| no\.?)"
              r"|patient(?: id| number| no\.?)|pt\.? ?id|accession(?: number| no\.?)?|acc\.? ?no\.?"
              r"|insurance(?: id| number| no\.?| policy(?: number)?)?|policy(?: number| no\.?)?"
              r"|member(?: id| number)|subscriber(?: id| number)|group(?: number| no\.?)"
              r"|ssn|social security(?: number| no\.?)?|case(?: number| no\.?)|encounter(?: id| number)"
              r"|visit(?: id| number)|account(?: number| no\.?)|acct\.?(?: number| no\.?)?|id|identifier)")
_STATES = (r"(?-i:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ"
           r"|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR)")
_SUFFIXES = ("Street St Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Dr Court Ct Place Pl Way Terrace Ter Parkway Pkwy "
             "Circle Cir Highway Hwy Square Sq Trail Trl Loop Row Alley Pike Crescent Plaza").split()
_SUFFIX = "(?-i:" + "|".join(sorted({form for suffix in _SUFFIXES for form in (suffix, suffix.lower(), suffix.upper())}
                                    - {"CT"}, key=len, reverse=True)) + ")"  # "CT" is the scan
_CITY = r"(?-i:[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2})"
_ZIP = r"\d{5}(?:-\d{4})?"
_STREET = (rf"\b\d{{1,6}}[A-Za-z]?\s+(?:(?:[A-Za-z0-9][\w'-]*|[A-Za-z]{{1,3}}\.)\s+){{1,4}}?{_SUFFIX}\b"
           r"(?:\.(?=,))?(?:\.?\s+(?-i:N|S|E|W|NE|NW|SE|SW)\b)?"
           r"(?:\.?,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Rm|Room|Fl|Floor|Bldg|#)\.?\s*#?\s*[A-Za-z0-9-]+)?"
           rf"(?:\.?,?\s+{_CITY}(?:,?\s+{_STATES}(?:\s+{_ZIP})?|,?\s+{_ZIP})|\.?,\s*{_CITY}(?=\s*[.,;]|\s*$))?")


def _street_recognizer(stop_words: frozenset[str]) -> Any:
    """House number, street words, suffix; it rejects "12 mm lesion per Dr ...": a street has no unit or stop word."""
    from presidio_analyzer import Pattern, PatternRecognizer

    blocked = _NOT_STREET | stop_words

    class StreetAddressRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            words = pattern_text.split(",")[0].lower().replace(".", " ").split()[1:-1]
            return any(word in blocked for word in words)

    patterns = [Pattern("street", _STREET, 0.7), Pattern("po_box", r"\bP\.?\s?O\.?\s*Box\s+\d+\b", 0.7)]
    return StreetAddressRecognizer(supported_entity="STREET_ADDRESS", name="street_address", patterns=patterns)


def _regex_recognizers(stop_words: frozenset[str]) -> list[Any]:
    """Dates, IDs, emails, URLs, addresses and ages: the kinds a regular expression finds reliably."""
    return [
        _pattern_recognizer("DATE_TIME", [
            ("numeric", rf"\b{_NUMERIC_DATE}\b", 0.6),
            ("month_day_year", rf"\b{_MONTH}\s+{_DAY}(?:,\s*|\s+){_YEAR}\b", 0.8),
            ("day_month_year", rf"\b{_DAY}(?:\s+of)?\s+{_MONTH},?\s+{_YEAR}\b", 0.8),
            ("month_year", rf"\b{_MONTH},?\s+{_YEAR}\b", 0.6),
            ("labelled", rf"(?<=\b{_DATE_LABELS}\s*[:#-]?\s*)(?:\d{{1,2}}[/.-]\d{{1,2}}(?:[/.-]\d{{2,4}})?|\d{{8}}|{_YEAR})\b",
             0.8),
            ("on_month_day", r"(?<=\b(?:on|since|from|until|dated)\s+)(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])\b(?![/\d])",
             0.5),
        ]),
        _pattern_recognizer("DATE_TIME", [  # no year: capitalised months only, so "1 may be" stays
            ("month_day", rf"\b{_MONTH}\s+{_DAY}\b{_UNITS}", 0.5),
            ("day_month", rf"\b{_DAY}(?:\s+of)?\s+{_MONTH}(?!\w)", 0.5),
        ], case_sensitive=True),
        _pattern_recognizer("MEDICAL_ID", [
            ("labelled", rf"(?<=\b{_ID_LABELS}\s*(?:is|was|=|:|#|-)?\s*(?:is\s*)?[:#]?\s*)"
                         r"(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]*[A-Z0-9]\b", 0.85),
            ("hash", r"(?<=#\s?)(?=[A-Z0-9-]*\d)[A-Z0-9-]{5,}\b", 0.6),
            ("ssn", r"\b\d{3}-\d{2}-\d{4}\b", 0.85),
            ("long_number", r"(?<![\d.,])\d{6,}(?![\d]|[.,]\d)", 0.5),
            ("grouped_digits", r"\b\d{2,}(?:[- ]\d{2,}){2,}\b", 0.4),
        ]),
        _pattern_recognizer("MEDICAL_ID", [  # letters then digits: "ACC-20240012", "AB1234567"
            ("prefixed", r"\b[A-Z]{1,5}-?\d{5,}[A-Z0-9]*\b", 0.5),
            ("hyphenated", r"\b(?=(?:[A-Z-]*\d){4})(?=[\d-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)+\b", 0.45),
        ], case_sensitive=True),
        _pattern_recognizer("EMAIL_ADDRESS", [
            ("email", r"\b[A-Z0-9._%+-]+@[A-Z0-9-]+(?:\.[A-Z0-9-]+)*\.[A-Z]{2,}\b", 0.95),
        ]),
        _pattern_recognizer("URL", [
            ("url", r"\b(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", 0.9),
            ("domain", r"\b(?:[A-Z0-9](?:[A-Z0-9-]*[A-Z0-9])?\.)+(?:com|org|net|edu|gov|io|info|biz|health|us|uk|ca)\b"
                       r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?", 0.6),
        ]),
        _street_recognizer(stop_words),
        _pattern_recognizer("STREET_ADDRESS", [
            ("city_state", rf"\b{_CITY},\s*{_STATES}(?:\s+{_ZIP})?\b", 0.6),
            ("zip_labelled", rf"(?<=\bzip(?: code)?\s*:?\s*){_ZIP}\b", 0.7),
        ]),
        _pattern_recognizer("AGE", [
            ("age_years", rf"\b{_AGE}(?:[\s-]*(?:years?|yrs?)(?:[\s-]*old|\s+of\s+age)?|\s*(?:yo|y/o|y\.o\.?|yoa))(?!\w)",
             0.8),
            ("age_labelled", rf"(?<=\b(?:age|aged)\s*:?\s*){_AGE}\b", 0.8),
        ]),
    ]


def _phone_recognizer() -> Any:
    """Phone and fax numbers: ``phonenumbers`` finds them in any common format, a label adds 7-digit ones."""
    import phonenumbers
    import regex
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    local = regex.compile(r"(?<=\b(?:phone|tel|telephone|cell|mobile|fax|pager|call|text|ph)\.?\s*(?:number|no\.?|#)?"
                          r"\s*(?:is|:)?\s*)\d{3}[-.\s]\d{4}\b", regex.IGNORECASE)

    class PhoneNumberRecognizer(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results = []
            for match in phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.POSSIBLE):
                if sum(char.isdigit() for char in match.raw_string) >= 10:
                    score = 0.75 if phonenumbers.is_valid_number(match.number) else 0.45
                    results.append(RecognizerResult("PHONE_NUMBER", match.start, match.end, score))
            results += [RecognizerResult("PHONE_NUMBER", m.start(), m.end(), 0.7) for m in local.finditer(text)]
            return results

    return PhoneNumberRecognizer(supported_entities=["PHONE_NUMBER"], name="phone_number")



def _build_analyzer() -> Any:
    """Presidio's ``AnalyzerEngine`` with a blank English pipeline, this module's recognizers only, no network."""
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine, ContextAwareEnhancer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SlimSpacyNlpEngine
    except ImportError as error:
        raise AssistantError(
            f"PHI redaction needs Microsoft Presidio ({error.name} is missing): pip install presidio-analyzer") from None

    class BlankEnglishEngine(SlimSpacyNlpEngine):
        """Tokens only: ``spacy.blank("en")`` needs no model download (the slim engine would fetch one)."""

        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    class SilentContextEnhancer(ContextAwareEnhancer):
        """Leaves scores as they are; the default enhancer logs the words around each match at DEBUG."""

        def __init__(self) -> None:
            super().__init__(0.0, 0.0, 0, 0)

        def enhance_using_context(self, text: str, raw_results: list[Any], nlp_artifacts: Any, recognizers: list[Any],
                                  context: list[str] | None = None) -> list[Any]:
            return raw_results

    nlp_engine = BlankEnglishEngine(auto_download=False)
    nlp_engine.load()
    stop_words = frozenset(nlp_engine.nlp["en"].Defaults.stop_words)
    recognizers = [*_regex_recognizers(stop_words), _phone_recognizer(), person_name_recognizer(stop_words)]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"],
                          context_aware_enhancer=SilentContextEnhancer())


def _merge(results: list[Any]) -> list[tuple[int, int, str]]:
    """Overlapping detections become one span covering them all, typed by the longest (then surest) one."""
    merged: list[list[Any]] = []  # [start, end, entity, length, score]
    for result in sorted(results, key=lambda r: (r.start, -r.end)):
        length = result.end - result.start
        if merged and result.start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], result.end)
            if (length, result.score) > (last[3], last[4]):
                last[2:] = [result.entity_type, length, result.score]
        else:
            merged.append([result.start, result.end, result.entity_type, length, result.score])
    return [(start, end, entity) for start, end, entity, _, _ in merged]


@dataclass(frozen=True)
class Redaction:
    """A message with its PHI replaced by placeholders, and how many spans of each kind were replaced."""

    text: str
    counts: dict[str, int]

    def summary(self) -> str:
        """What was removed, by kind and number only, e.g. "removed from your message: 2 names, 1 date"."""
        parts = []
        for kind in PLACEHOLDERS.values():
            if number := self.counts.get(kind, 0):
                noun = _NOUNS[kind]
                parts.append(f"{number} {noun if number == 1 else _PLURALS.get(noun, noun + 's')}")
        return "removed from your message: " + ", ".join(parts) if parts else ""


class TextRedactor:
    """Finds and replaces PHI in free text; Presidio and spaCy load on the first message, once.

    Analysis holds a lock too: spaCy's tokenizer cache and Presidio's lazily compiled patterns are
    mutated while a text is analysed, and a chat message takes milliseconds.
    """

    def __init__(self, score_threshold: float = 0.4):
        if not 0.0 <= score_threshold <= 1.0:
            raise AssistantError(f"score_threshold must be between 0 and 1, got {score_threshold}")
        self.score_threshold = score_threshold
        self._lock = threading.Lock()
        self._analyzer: Any = None

    def __repr__(self) -> str:
        return f"TextRedactor(score_threshold={self.score_threshold}, loaded={self._analyzer is not None})"

    def redact(self, text: str) -> Redaction:
        """Replace every detected PHI span in ``text`` with its placeholder, e.g. "[NAME]"."""
        if not isinstance(text, str):
            raise AssistantError(f"the text to redact must be a str, not {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise AssistantError(
                f"the message is {len(text):,} characters; PHI redaction takes at most {MAX_TEXT_CHARS:,}: send it in parts")
        if not text.strip():
            return Redaction(text, {})
        with self._lock:
            if self._analyzer is None:
                self._analyzer = _build_analyzer()
                logger.info("PHI text redactor loaded (Presidio on a blank spaCy pipeline)")
            results = self._analyzer.analyze(text=text, language="en", score_threshold=self.score_threshold)
        pieces, counts, cursor = [], {}, 0
        for start, end, entity in _merge(results):
            kind = PLACEHOLDERS[entity]
            pieces += [text[cursor:start], f"[{kind}]"]
            counts[kind] = counts.get(kind, 0) + 1
            cursor = end
        pieces.append(text[cursor:])
        logger.debug("redacted %d spans of PHI from a message of %d characters", sum(counts.values()), len(text))
        return Redaction("".join(pieces), counts)


_shared_redactor = TextRedactor()


def redact_text(text: str) -> Redaction:
    """Redact ``text`` with the process-wide ``TextRedactor`` (loaded once, shared by all threads)."""
    return _shared_redactor.redact(text)
