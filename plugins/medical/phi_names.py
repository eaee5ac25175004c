"""Find person names in the tokens of a chat message; ``plugins.medical.phi_text`` runs this as one recognizer.

There is no NER model (spaCy models are not on PyPI), so a name is found from what stands around it:
after a cue ("Mr.", "name is", "my son", "this is", "the report for", "the scan of"), or as a run of
capitalised words holding a US census first name or surname (the ``names`` package). Allow-lists keep
"Mass", "Bell", "Right Kidney", "March 2024", "CT Abdomen" and "Hodgkin Lymphoma" from being taken for
people. It knows words and spaCy tokens only: dates, IDs, phones and addresses are ``phi_text``'s patterns,
and it never sees a placeholder or a log.
"""

from __future__ import annotations

from typing import Any

from assistant.errors import AssistantError

# Words of radiology reports that the census lists also hold as names ("Mass", "Bell", "Lobe", "Portal").
CLINICAL_WORDS = frozenset("""
abdomen abdominal adrenal air angle anterior aorta aortic appendix arterial artery atelectasis axial benign
bile biliary bladder body bone bowel brain breast bright bronchus calcification calculus cancer cardiac care
carotid case cecum cerebral chest classification clinical cm colon common compare comparison contrast coronal
cortex criteria ct cyst dense density diffuse disease distal diverticulum doctor dose duct edema effusion
enhancement esophagus exam fat fatty finding findings fluid focal foot fracture free gall gallbladder gland
grade guidelines hand head heart hepatic high hilum hip history hounsfield hu iliac image imaging impression
index indication inferior information kidney knee large lateral left lesion line liver lobe long low lower
lung lymph lymphoma malignant maneuver mass medial method mid mild mm moderate mr mri muscle neck nerve node
nodule normal number nurse pain palsy pancreas patient pelvic pelvis pet phase portal posterior pouch prior
procedure prostate pulmonary ratio record rectum reflex renal report result right room scale scan score
segment series severe short sign sinus slice small society soft spine spleen stable stone study summary
superior syndrome system tail technique test thyroid tissue tumor ultrasound units upper ureter uterus vein
venous ventricle vertebra view wall white
""".split())
# Capitalised words that are names in the gazetteer but rarely names on their own in a message.
_COMMON_CAPITALISED = frozenset("""
january february march april may june july august september october november december monday tuesday wednesday
thursday friday saturday sunday jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
hello hi thanks thank dear please yes no ok okay sincerely hospital clinic center centre medical university
general street avenue road north south east west
""".split())

_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof"}
_TITLE_WORDS = {"doctor", "professor", "sir", "madam"}  # cue like a relation: "my doctor said" is no name
_RELATIONS = set("""patient pt son daughter wife husband mother father mom mum dad brother sister partner spouse friend
caregiver guardian grandson granddaughter grandmother grandfather aunt uncle niece nephew cousin boyfriend girlfriend
fiance fiancee neighbor neighbour physician surgeon radiologist nurse pcp attending resident technologist contact client
""".split())
_BY_VERBS = set("""signed referred dictated seen read reviewed ordered treated accompanied examined approved prepared
transcribed written sent""".split())  # "... by"
_SEPARATORS = {",", ":", "-", "is", "was", "=", "named", "called"}
_LABELS = {"dob", "mrn", "ssn", "dos", "id", "age", "aged", "born", "phone", "cell", "fax", "email", "tel", "md", "rn",
           "np", "phd", "dds", "jr", "sr"}  # what follows a name in a message, never part of it
_NEVER_NAMES = _TITLES | _TITLE_WORDS | _LABELS
_RELATION_CUES = _RELATIONS | _TITLE_WORDS
_PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "da", "di", "du", "la", "le", "bin", "ibn", "al", "el", "ben"}
# Words after which a user names someone ("the report for", "the scan of", "on behalf of", "Re:"); "this is",
# "I am" and "named" are cues of their own above. What follows them is as often "March 2024" or "the Liver",
# so only Title-case words that pass ``NameFinder._may_follow_cue`` count, at most three.
_CUE_WORDS = {"for", "of", "about", "regarding", "re", "concerning", "called", "from"}
# Capitalised words that follow those cues in messages and reports but name no one ("for Follow-up", "of Systems").
_NOT_NAMES_AFTER_CUES = frozenset("""
follow review biopsy surgery staging screening surveillance therapy chemotherapy radiotherapy radiation opinion
first second third next last consult workup clearance metastases metastasis recurrence progression relapse
medicine department emergency health insurance billing records results questions details reference example
today tomorrow yesterday tonight morning afternoon evening night week weekend month year christmas easter
thanksgiving covid english spanish french german chinese arabic god new old other another diet exercise medication
medicare medicaid cross shield aetna cigna humana research use admission discharge consent anesthesia anaesthesia
sedation allergy allergies asthma diabetes stroke attack failure pneumonia flu influenza fever cough headache nausea
vomiting bleeding swelling smoking drinking alcohol pregnancy birth labor labour delivery dialysis transplant stent
pacemaker implant metal claustrophobia iodine gadolinium exposure weight height blood urine stool sugar cholesterol
insulin prescription pharmacy operation recovery rehab rehabilitation physio gallstone gallstones dementia anxiety
""".split())
# What an eponym names ("Hodgkin Lymphoma", "Bosniak Classification"); a Title-case word just before one is no person.
_EPONYM_HEADS = frozenset("""
disease syndrome palsy lymphoma sarcoma pouch diverticulum sign reflex maneuver manoeuvre classification criteria
score scale triad law hernia phenomenon esophagus oesophagus method technique index units society guidelines
""".split())
# Eponyms written with a possessive ("Crohn's disease"); "Ngozi's disease" stays a name.
_EPONYMS = frozenset("""
addison alzheimer asperger baker barrett bell bosniak burkitt chiari colles conn crohn cushing dandy down ehlers
ewing fabry fleischner gaucher graves guillain hashimoto hirschsprung hodgkin huntington kaposi kawasaki klatskin
lyme marfan meckel morison murphy osgood paget pancoast parkinson perthes raynaud reiter sjogren tourette virchow
wernicke whipple wilms wilson
""".split())
# The clinical words among the 3,000 commonest census surnames: after "report for Xochitl" one may end the name.
_CLINICAL_SURNAMES = frozenset("white long stone colon short wall small case bright head hand high bone free".split())
# Endings of nouns that no census name has and few names do: "Consultation", "Radiology", "Hemangioma".
_NOUN_SUFFIXES = ("tion", "sion", "ment", "ness", "ology", "graphy", "ism", "ical", "itis", "osis", "ectomy", "otomy",
                  "scopy", "plasty", "opathy", "algia", "emia", "oma", "omas", "ity", "ysis", "therapy")


def load_gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """Lower-case US census (1990) first names (5,163) and surnames (88,799) shipped by the ``names`` package."""
    try:
        from importlib.resources import files

        folder = files("names")
    except ModuleNotFoundError:
        raise AssistantError("PHI redaction needs the name lists of the 'names' package: pip install names") from None

    def read(*file_names: str) -> frozenset[str]:
        lines = ((folder / name).read_text(encoding="ascii").splitlines() for name in file_names)
        return frozenset(line.split()[0].lower() for group in lines for line in group if line.strip())

    return read("dist.male.first", "dist.female.first"), read("dist.all.last")


_NAME_WORD = r"(?:\p{Lu}['’])?\p{Lu}\p{L}*\p{Ll}\p{L}*"  # Smith, McDonald, O'Brien, Ní; not CT, not I
_INITIAL = r"\p{Lu}\.?"
_JOINERS = {"-", "'", "’"}


class NameFinder:
    """Finds person names in spaCy tokens: after a cue, or as a capitalised run holding a gazetteer name.

    Modes say how much a token must look like a name: after "name is" even lower case counts; after a
    title any capitalised word counts (so "Dr. Bell"); after a relation ("my son", "Patient") a
    capitalised word that is not clinical; after a preposition or verb ("report for", "scan of") one to
    three Title-case words that are not clinical, a month, a common word, a noun by its ending or an
    eponym ("Hodgkin Lymphoma"); with no cue only a run of two or more capitalised words,
    one of them a census first name or surname, none clinical or common (and in a sentence Written
    Like A Heading, a first name then a surname). Once a name has begun, a clinical word may be its
    surname: "Mary White", "John Bell".
    """

    SCORES = {"named": 0.85, "title": 0.85, "relation": 0.75, "cue": 0.7}

    def __init__(self, first_names: frozenset[str], surnames: frozenset[str], stop_words: frozenset[str]):
        import regex

        self.known = first_names | surnames
        self.first_names = first_names
        self.stop_words = stop_words
        self.name_word = regex.compile(_NAME_WORD)
        self.initial = regex.compile(_INITIAL)

    def find(self, tokens: list[Any]) -> list[tuple[int, int, float]]:
        """(start, end, score) character spans of the names in ``tokens``."""
        spans, i, capitals = [], 0, self._sentence_capitals(tokens)  # (capitalised, all) content words
        while i < len(tokens):
            mode, start = self._cue(tokens, i)
            end, words = self._run(tokens, start, mode) if mode else (start, [])
            if words and mode == "cue":
                end = self._cued_end(tokens, start, end, len(words), heading=self._reads_as_heading(capitals[i]))
                words = words if end else []
            if words:
                spans.append((tokens[start].idx, _token_end(tokens[end - 1]), self.SCORES[mode]))
                i = end
                continue
            end, words = self._run(tokens, i, "gazetteer")
            if len(words) >= 2 and self._is_known_name(words, heading=self._reads_as_heading(capitals[i])):
                score = 0.6 if any(word in self.first_names for word in words) else 0.5
                spans.append((tokens[i].idx, _token_end(tokens[end - 1]), score))
                i = end
                continue
            i += 1
        return spans

    def _is_known_name(self, words: list[str], heading: bool) -> bool:
        """A known word makes a name; in a sentence Written Like A Heading, a first name then a surname must."""
        if heading:
            return words[0] in self.first_names and words[-1] in self.known
        return any(word in self.known for word in words)

    def _sentence_capitals(self, tokens: list[Any]) -> list[tuple[int, int]]:
        """Per token, (capitalised, all) content words of its sentence; acronyms and stop words do not count."""
        counts, sentence = [], []
        for token in tokens + [None]:
            sentence += [token] if token is not None else []
            if token is None or token.text in (".", "!", "?", ";") or "\n" in token.text:
                words = [t.text for t in sentence if t.is_alpha and not t.is_upper and t.lower_ not in self.stop_words]
                counts += [(sum(word[0].isupper() for word in words), len(words))] * len(sentence)
                sentence = []
        return counts

    @staticmethod
    def _reads_as_heading(counts: tuple[int, int]) -> bool:
        """In "Can you Explain This in Simple Terms?" a capital proves nothing, though "Terms" may be a surname."""
        return counts[0] >= 3 and 2 * counts[0] > counts[1]

    def _cue(self, tokens: list[Any], i: int) -> tuple[str | None, int]:
        """The mode a cue at token ``i`` sets for the words after it, and where those words start."""
        low, following = tokens[i].lower_, [token.lower_ for token in tokens[i + 1:i + 3]]
        if low.rstrip(".") in _TITLES and not self._ends_street(tokens, i):
            return "title", i + 2 if following[:1] == ["."] else i + 1
        if low in ("name", "names") and following[:1] and following[0] in (":", "is", "was", "'s", "are"):
            return "named", self._skip(tokens, i + 2)
        if low == "named":
            return "named", self._skip(tokens, i + 1)
        if low in _RELATION_CUES:
            return "relation", self._skip(tokens, i + 1)
        if (low, following[:1]) in (("this", ["is"]), ("i", ["am"]), ("i", ["'m"])):
            return "relation", self._skip(tokens, i + 2)
        if low in _BY_VERBS and following[:1] == ["by"]:
            return "relation", self._skip(tokens, i + 2)
        if low in _CUE_WORDS:
            return "cue", self._skip(tokens, i + 1, {":"})  # "Re: Ngozi Okonkwo"
        return None, i

    def _cued_end(self, tokens: list[Any], start: int, end: int, count: int, heading: bool) -> int:
        """Where the name found after "report for" ends, or 0 if it is none.

        It is none before an eponym's head ("Hodgkin Lymphoma", "Crohn's disease") or a Title-case clinical
        or common word ("Pancreatic Cancer", "Blue Cross") or, in a sentence Written Like A Heading, as one word
        ("Request For Consultation"). A census name may run past the three words a cue allows: "for Maria
        Garcia Lopez Hernandez".
        """
        following = [token.lower_ for token in tokens[end:end + 2]]
        if following[:1] and (following[0] in _EPONYM_HEADS or (
                following[0] in CLINICAL_WORDS | _NOT_NAMES_AFTER_CUES and self.name_word.fullmatch(tokens[end].text))):
            return 0
        possessive = following[:1] in (["'s"], ["’s"], ["'"], ["’"])
        if possessive and following[1:] and following[1] in _EPONYM_HEADS and tokens[end - 1].lower_ in _EPONYMS:
            return 0
        if heading and count == 1:
            return 0
        known_end, known = self._run(tokens, start, "gazetteer")
        if len(known) >= 2 and self._is_known_name(known, heading):
            end = max(end, known_end)
        return end

    @staticmethod
    def _ends_street(tokens: list[Any], i: int) -> bool:
        """Whether "Dr" at ``i`` is a street suffix: "4 Oak Dr", "12 W 3rd Dr" (a number, then a few words)."""
        j = i - 1
        while j >= 0 and i - j <= 5 and not tokens[j].text.isdigit() and tokens[j].text[:1].isalnum():
            j -= 1
        return 0 <= j < i - 1 and tokens[j].text.isdigit()

    @staticmethod
    def _skip(tokens: list[Any], i: int, words: set[str] = _SEPARATORS) -> int:
        """The first token from ``i`` on that is not one of ``words``."""
        while i < len(tokens) and tokens[i].lower_ in words:
            i += 1
        return i

    def _run(self, tokens: list[Any], i: int, mode: str) -> tuple[int, list[str]]:
        """Where the name starting at token ``i`` ends (exclusive) and its lower-case words (at most 4)."""
        end, words, most, cued = i, [], 3 if mode == "cue" else 4, mode != "gazetteer"
        while i < len(tokens):
            token, text = tokens[i], tokens[i].text
            after_name = bool(words) and (cued or words[-1] in self.first_names)  # "Mary White", "John Bell"
            if self._is_name_word(token, mode, after_name):
                if len(words) == most or (not cued and len(words) >= 2 and token.lower_ not in self.known):
                    break  # with no cue a third word must be a known name: "Mary Ann Smith"
                words.append(token.lower_)
                end = i = i + 1
            elif (words or cued) and len(words) < most and self.initial.fullmatch(text) and text != "I" and (
                    self._is_name_at(tokens, i + 1, mode) or (words and text.endswith("."))):
                end = i = i + 1  # "J. Smith", "John Q. Public", "Ó Súilleabháin"
            elif words and text in _JOINERS and not tokens[i - 1].whitespace_ and not token.whitespace_:
                i += 1  # Owusu-Ansah, O' Brien: the joiner counts once the next part does
            elif (words or cued) and token.lower_ in _PARTICLES and self._is_name_at(tokens, self._skip(tokens, i, _PARTICLES), mode):
                i = self._skip(tokens, i, _PARTICLES)  # van der Merwe
            elif words and text == "," and most == 4 and self._is_first_name_at(tokens, i + 1, mode):  # not after "for"
                most, i = len(words) + 1, i + 1  # "Garcia, Maria": the first name ends it
            else:
                break
        return end, words

    def _is_name_at(self, tokens: list[Any], i: int, mode: str) -> bool:
        return i < len(tokens) and self._is_name_word(tokens[i], mode, after_name=mode != "gazetteer")

    def _is_first_name_at(self, tokens: list[Any], i: int, mode: str) -> bool:
        return self._is_name_at(tokens, i, mode) and (mode != "gazetteer" or tokens[i].lower_ in self.first_names)

    def _is_name_word(self, token: Any, mode: str, after_name: bool = False) -> bool:
        """Whether ``token`` can be part of a name in ``mode``; ``after_name``: a clinical word may be a surname."""
        text, low = token.text, token.lower_
        if not text.replace("'", "").replace("’", "").isalpha() or low.rstrip(".") in _NEVER_NAMES or low in self.stop_words:
            return False
        capitalised = self.name_word.fullmatch(text) is not None
        # "JOHN SMITH" typed in capitals: a known name, or any word once a name has begun after a cue
        shouting = text.isupper() and len(text) > 1 and (low in self.known or (after_name and mode != "gazetteer"))
        if low in CLINICAL_WORDS and not after_name and mode != "title":
            return mode == "named" and capitalised
        if mode == "cue":
            return capitalised and self._may_follow_cue(token, after_name)
        if mode == "named":
            return capitalised or shouting or text.islower()
        if mode in ("title", "relation"):
            return capitalised or shouting
        return capitalised and low not in _COMMON_CAPITALISED and (low not in CLINICAL_WORDS or after_name)

    def _may_follow_cue(self, token: Any, after_name: bool) -> bool:
        """Whether a Title-case word after "report for" may be a name: not "March", "Follow-up", "Systems",
        "Consultation"; a report's word only as a common surname after a name ("for Xochitl White", not "Cancer")."""
        low = token.lower_
        forms = {low, low[:-1] if low.endswith("s") else low, low[:-2] if low.endswith("es") else low}  # Systems
        if low in _COMMON_CAPITALISED or forms & _NOT_NAMES_AFTER_CUES:
            return False
        if forms & CLINICAL_WORDS and not (after_name and low in _CLINICAL_SURNAMES):
            return False
        if low not in self.known and any(len(low) > len(end) + 2 and low.endswith(end) for end in _NOUN_SUFFIXES):
            return False
        doc, at = token.doc, token.i  # "Follow-up", "X-ray": a hyphen then a lower-case word makes a compound
        compound = not token.whitespace_ and at + 2 < len(doc) and doc[at + 1].text == "-" and doc[at + 2].is_lower
        return not compound


def _token_end(token: Any) -> int:
    return token.idx + len(token.text)


def person_name_recognizer(stop_words: frozenset[str]) -> Any:
    """The names pass as a Presidio recognizer: it reads the tokens of the blank spaCy pipeline.

    Args:
        stop_words: spaCy's English stop words, which are never part of a name ("The", "This", "May").
    """
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    finder = NameFinder(*load_gazetteer(), stop_words=stop_words)

    class PersonNameRecognizer(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            spans = finder.find(list(nlp_artifacts.tokens))
            return [RecognizerResult("PERSON", start, end, score) for start, end, score in spans]

    return PersonNameRecognizer(supported_entities=["PERSON"], name="person_name")

