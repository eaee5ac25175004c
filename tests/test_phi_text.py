"""PHI redaction of typed chat messages (plugins.medical.phi_text): recall, precision, leaks, limits.

The recall set is generated here from this file's own name, street and city lists, not from the
census gazetteer the redactor uses: about half the names are rare or non-English ("Xochitl",
"Owusu-Ansah", "Ní Bhriain") and stand after a cue, as a person would type them; common American
names also appear with no cue. Each message records what it planted, so recall is checked value by
value and over-redaction is checked against the exact text the message should become.
"""

from __future__ import annotations

import ast
import datetime
import logging
import random
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from assistant.errors import AssistantError
from plugins.medical import phi_names, phi_text
from plugins.medical.phi_text import MAX_TEXT_CHARS, Redaction, TextRedactor, redact_text

pytest.importorskip("presidio_analyzer")

COMMON_FIRST = ["James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "William", "Susan",
                "Carlos", "Karen", "Thomas", "Nancy", "Daniel", "Barbara"]
COMMON_LAST = ["Smith", "Johnson", "Garcia", "Martinez", "Wilson", "Anderson", "Thompson", "Lopez", "Clark",
               "Rodriguez", "Lewis", "Walker", "Hernandez", "Young", "White", "Bell"]
RARE_FIRST = ["Xochitl", "Oluwaseun", "Siobhan", "Zbigniew", "Thandiwe", "Priyanka", "Kwabena", "Ngozi", "Leilani",
              "Saoirse", "Aarav", "Yevgenia", "Ifeoma", "Dagny", "Eilidh", "Tadhg", "Niamh", "Bronwyn", "Anahí", "Søren"]
RARE_LAST = ["Quetzal-Ramos", "Adebayo", "Ní Bhriain", "Brzęczyszczykiewicz", "Owusu-Ansah", "Okonjo-Iweala",
             "Kahananui", "Venkataraman", "Chaudhry", "van der Merwe", "Abernethy-Zhou", "Mbeki", "Tchaikovskaya",
             "Ó Súilleabháin", "Fitzwilliam", "Kowalczyk", "Nakamura-Lind", "Oyelaran", "Ruíz", "Haugen"]
STREETS = ["Elm", "Maple", "Oak", "Martin Luther King Jr", "Washington", "5th", "Main", "Sunset", "Lakeview", "Old Mill",
           "Pine Ridge", "W 34th"]
SUFFIXES = ["Street", "St.", "Ave", "Avenue", "Road", "Rd", "Blvd", "Lane", "Drive", "Dr", "Court", "Way", "Place"]
CITIES = [("Springfield", "IL"), ("Boston", "MA"), ("San Antonio", "TX"), ("Ann Arbor", "MI"), ("Salt Lake City", "UT"),
          ("Winston-Salem", "NC"), ("Portland", "OR"), ("Tacoma", "WA")]
AREA_CODES = ["212", "617", "415", "312", "713", "206", "303", "404", "503", "919"]

CUED_NAME_TEMPLATES = [
    "Hi, my name is {name} and I need help reading my scan.",
    "Patient {name} had a CT yesterday.",
    "Name: {last}, {first}",
    "Can you explain this to Mr. {last}?",
    "Dr. {name} said the nodule is benign.",
    "My daughter {first} is worried about the result.",
    "I was referred by Dr. {last} for an MRI.",
    "Report signed by {name}.",
    "My wife, {name}, had the ultrasound.",
    "This is {name}, asking about my father's report.",
    "Please address it to Mrs. {name}.",
    "my name is {lower_name} and this is my report",
]
BARE_NAME_TEMPLATES = [
    "{name} came in for the follow-up scan.",
    "Please send a copy to {name} before Friday.",
    "Is this the same lesion {name} mentioned?",
]
DATE_TEMPLATES = ["DOB {date}.", "I was born on {date}.", "The scan from {date} showed a cyst.", "Seen {date} at clinic.",
                  "Date of birth: {date}", "My last CT was {date}, is it worse?"]
ID_TEMPLATES = ["MRN {id}", "MRN: {id}", "medical record number {id}", "My record number is {id}.", "patient ID {id}",
                "Accession # {id}", "accession number {id}", "insurance ID {id}", "Member ID: {id}", "ID#{id}",
                "my chart says {id} at the top"]
PHONE_TEMPLATES = ["Call me at {phone}.", "My cell is {phone}", "fax: {phone}", "Phone {phone} anytime.",
                   "You can reach my son on {phone}."]
EMAIL_TEMPLATES = ["Email me at {email}.", "Send the report to {email} please", "contact: {email}"]
URL_TEMPLATES = ["I uploaded it to {url}", "See {url} for the images.", "Portal link: {url}"]
ADDRESS_TEMPLATES = ["I live at {address}.", "Mail it to {address}", "Our address is {address}, thanks."]
AGE_TEMPLATES = ["My mother is a {age} woman.", "He is {age} and has a kidney cyst.", "Patient aged {age_number}, liver lesion."]
DATE_FORMATS = ["%m/%d/%Y", "%Y-%m-%d", "%B %d, %Y", "%d %b %Y", "%b %d %Y", "%m-%d-%y", "%d.%m.%Y", "%B %Y",
                "%b. %d, %Y", "%d %B %Y", "%B %-d"]

CLINICAL_SENTENCES = [
    "Small hypodense lesion in the right lobe of the liver, 12 mm.",
    "CT abdomen with contrast.",
    "Compare with prior study.",
    "Slice 42 of 120 shows the nodule best.",
    "The lesion measures 3.2 x 2.1 cm and is unchanged.",
    "Attenuation of 35 Hounsfield units, consistent with a simple cyst.",
    "Mean density 12 HU on the non-contrast phase.",
    "Left kidney: 2 mm nonobstructing calculus in the lower pole.",
    "Right Kidney Normal.",
    "Large Mass In The Right Lobe Of The Liver.",
    "Impression: Stable Disease.",
    "Findings: Portal Vein Patent. Spleen Normal Size.",
    "MRI of the brain without contrast, axial T2 and FLAIR.",
    "Bell's palsy was mentioned in the history.",
    "No mass, no lymph node enlargement, no free fluid.",
    "Series 3, image 57: 4 mm pulmonary nodule in the left upper lobe.",
    "Follow-up CT in 3 to 6 months is recommended.",
    "The gallbladder wall is 2 mm thick.",
    "Blood pressure 120/80, heart rate 72.",
    "The 1 cm lesion may be a hemangioma; 1 may represent a cyst.",
    "Contrast bolus of 100 ml at 3 ml/s.",
    "Bosniak 2 cyst in the right kidney, 15 mm.",
    "Vertebral bodies L1-L5 are normal in height.",
    "C5-C6 disc bulge without stenosis.",
    "Dose length product 450 mGy*cm.",
    "Ejection fraction 55%.",
    "The report says segment 7 of the liver, lesion 2 of 3.",
    "Is the mass in the head of the pancreas dangerous?",
    "What does a Hounsfield value of 20 mean on the CT?",
    "Could you explain the impression section in plain words?",
    "My doctor said the spleen is slightly large, 13 cm.",
    "A 45 year old with right upper quadrant pain.",
    "PET CT shows mild uptake, SUV 2.1.",
    "Axial, coronal and sagittal reconstructions were reviewed.",
    "Kidney stones, 3 of them, the largest 5 mm.",
    "Fleischner Society guidelines suggest no follow-up.",
    "Bosniak Classification IIF, Hodgkin Lymphoma less likely.",
    "Morison's pouch is clear; Graves Disease of the thyroid is known.",
    "What does BI-RADS 4 mean, and is LI-RADS 3 worse?",
    "T1 and T2 weighted images of the Left Hip, 3 mm slices.",
    "There is a lesion in the Right Kidney and a cyst in the liver.",
    "Compared with the prior exam, the Portal Vein is patent and the Mass is smaller.",
]


FILLERS = [sentence for sentence in CLINICAL_SENTENCES if "Bell" not in sentence and "100" not in sentence]


def _person(rng: random.Random, rare: bool) -> tuple[str, str]:
    first = rng.choice(RARE_FIRST if rare else COMMON_FIRST)
    last = rng.choice(RARE_LAST if rare and rng.random() < 0.8 else COMMON_LAST)
    return first, last


def _values(rng: random.Random) -> dict[str, str]:
    """One random value of each kind, in a varied format."""
    day = datetime.date(1925, 1, 1) + datetime.timedelta(days=rng.randrange(36_000))
    area, exchange, line = rng.choice(AREA_CODES), rng.randrange(201, 999), rng.randrange(10_000)
    phone = rng.choice(["({a}) {e}-{l:04d}", "{a}-{e}-{l:04d}", "{a}.{e}.{l:04d}", "{a}{e}{l:04d}", "+1 {a} {e} {l:04d}",
                        "1-{a}-{e}-{l:04d}", "{a} {e} {l:04d}", "+44 20 7946 {l:04d}"]).format(a=area, e=exchange, l=line)
    first, last = _person(rng, rare=False)
    user = rng.choice([f"{first}.{last}", f"{first[0]}{last}{rng.randrange(100)}", f"{last}_{first}"]).lower()
    city, state = rng.choice(CITIES)
    address = f"{rng.randrange(1, 99999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
    address += rng.choice(["", f", Apt {rng.randrange(1, 40)}{rng.choice('ABC')}", " Suite 200"])
    address += rng.choice(["", f", {city}, {state} {rng.randrange(10000, 99999)}", f", {city}, {state}"])
    age = rng.randrange(90, 106)
    return {
        "date": day.strftime(rng.choice(DATE_FORMATS)),
        "id": rng.choice([str(rng.randrange(10**6, 10**10)), f"A{rng.randrange(10**7):07d}", f"AB-{rng.randrange(10**6):06d}",
                          f"ACC{rng.randrange(2000, 2030)}{rng.randrange(10**4):04d}", f"XK9-44-{rng.randrange(10**4):04d}",
                          f"{rng.randrange(10**7, 10**8)}"]),
        "phone": phone,
        "email": f"{user}@{rng.choice(['example.com', 'mail.example.org', 'clinic.example.co.uk'])}",
        "url": rng.choice([f"https://www.{last.lower()}family.com/photos", f"http://mychart.example.org/patient/{line}",
                           f"www.example.net/{first.lower()}"]),
        "address": address,
        "age": rng.choice([f"{age}-year-old", f"{age} years old", f"{age} yo", f"{age} y/o"]),
        "age_number": str(age),
    }


def generate_messages(count: int, seed: int = 7) -> list[tuple[str, str, list[str]]]:
    """(message, the message with ideal placeholders, planted values) for ``count`` chat messages."""
    rng, messages = random.Random(seed), []
    for index in range(count):
        parts, ideal, planted = [], [], []

        def plant(template: str, **values: tuple[str, str]) -> None:
            parts.append(template.format(**{key: value for key, (value, _) in values.items()}))
            ideal.append(template.format(**{key: f"[{kind}]" for key, (_, kind) in values.items()}))
            planted.extend(value for value, _ in values.values())

        rare = index % 2 == 0  # rare names only after a cue: no gazetteer could know them
        first, last = _person(rng, rare)
        template = rng.choice(CUED_NAME_TEMPLATES if rare or rng.random() < 0.6 else BARE_NAME_TEMPLATES)
        if template == "Name: {last}, {first}":
            parts.append(template.format(first=first, last=last))
            ideal.append("Name: [NAME]")
            planted.extend([first, last])
        else:
            key = re.search(r"\{(\w+)\}", template).group(1)
            name = {"name": f"{first} {last}", "lower_name": f"{first} {last}".lower(), "first": first, "last": last}[key]
            plant(template, **{key: (name, "NAME")})
            planted.extend(name.split() if key != "lower_name" else [])
        values = _values(rng)
        for kind, templates in [("DATE", DATE_TEMPLATES), ("ID", ID_TEMPLATES), ("PHONE", PHONE_TEMPLATES),
                                ("EMAIL", EMAIL_TEMPLATES), ("URL", URL_TEMPLATES), ("ADDRESS", ADDRESS_TEMPLATES),
                                ("AGE", AGE_TEMPLATES)]:
            if rng.random() < 0.45:
                template = rng.choice(templates)
                key = re.search(r"\{(\w+)\}", template).group(1)
                plant(template, **{key: (values[key], kind)})
        if rng.random() < 0.5:
            filler = rng.choice(FILLERS)
            parts.append(filler)
            ideal.append(filler)
        messages.append((" ".join(parts), " ".join(ideal), planted))
    return messages


def _leaked(value: str, text: str) -> bool:
    """Whether ``value`` is still in ``text`` as a whole word (names are planted word by word too)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE) is not None


def _shape(text: str) -> str:
    """``text`` with every placeholder alike and no period after one ("St." may end an address or not)."""
    return re.sub(r"\[[A-Z]+\]\.*", "[X]", text)


MESSAGES = generate_messages(200)


@pytest.fixture(scope="module")
def redactor() -> TextRedactor:
    return TextRedactor()


def test_recall_on_generated_messages(redactor: TextRedactor) -> None:
    planted = missed = exact = 0
    for message, ideal, values in MESSAGES:
        redacted = redactor.redact(message).text
        leaks = [value for value in values if _leaked(value, redacted)]
        planted, missed = planted + len(values), missed + len(leaks)
        assert not leaks, f"{len(leaks)} planted value(s) survived in a message rewritten as: {redacted!r}"
        exact += _shape(redacted) == _shape(ideal)
    recall, over_redaction_free = 1 - missed / planted, exact / len(MESSAGES)
    print(f"recall {recall:.3f} on {planted} planted values in {len(MESSAGES)} messages; "
          f"{over_redaction_free:.3f} of messages redacted exactly the planted spans")
    assert len(MESSAGES) >= 150 and planted > 500
    assert over_redaction_free >= 0.9, f"only {over_redaction_free:.2f} of messages kept all their non-PHI words"


def test_placeholders_name_the_kind(redactor: TextRedactor) -> None:
    result = redactor.redact("Patient Oluwaseun Adebayo, DOB 03/14/1931, MRN 0048291, cell (617) 555-0143, "
                             "o.adebayo@example.com, https://mychart.example.org/p/1, 12 Elm Street, Boston, MA 02115, "
                             "a 94-year-old man.")
    assert result.text == "Patient [NAME], DOB [DATE], MRN [ID], cell [PHONE], [EMAIL], [URL], [ADDRESS], a [AGE] man."
    assert result.counts == {"NAME": 1, "DATE": 1, "ID": 1, "PHONE": 1, "EMAIL": 1, "URL": 1, "ADDRESS": 1, "AGE": 1}


@pytest.mark.parametrize("sentence", CLINICAL_SENTENCES)
def test_clinical_sentences_come_back_unchanged(redactor: TextRedactor, sentence: str) -> None:
    result = redactor.redact(sentence)
    assert (result.text, result.counts) == (sentence, {})


# Names after a preposition or verb ("the scan of", "report for", "on behalf of"), none of their words in the
# census gazetteer (the test checks), so only the cue can find them.
UNLISTED_FIRST = ["Belnoxmb", "Chidubem", "Thandeka", "Oluwadamilare", "Nkechi", "Zhaoying", "Siddharth", "Aigerim",
                  "Yerlan", "Eluned", "Radhika", "Temitope", "Mthunzi", "Anwuli"]
UNLISTED_LAST = ["Karudcgc", "Okonkwo", "Zungu", "Raghunathan", "Ekwueme", "Zhakupov", "Abdrakhmanova", "Sithole",
                 "Venkatesan", "Mbatha", "Oyelowo-Adeyemi", "Tshabalala", "Chukwuemeka"]
PREPOSITION_CUE_TEMPLATES = [
    "Can you explain the scan of {name}?",
    "Draft the report for {name}, with the liver lesion.",
    "I have a question about Mrs {last}.",
    "Regarding {name}: is the cyst benign?",
    "Is the nodule worse for patient {name}?",
    "Hello, this is {name}.",
    "Re: {name} (CT abdomen)",
    "I am writing concerning {name} and her MRI.",
    "I'm asking on behalf of {name}.",
    "I'm {first}, can you help?",
    "A referral from {name} arrived today.",
    "My neighbour, a man called {name}, had a CT.",
    "The results of {first} came back.",
    "What about {name}'s liver lesion?",
    "Please draft the summary for {three}.",
]
# Title-case words after the same cues that are no one's name; a date is still a date.
NOT_NAMES_AFTER_CUES = [
    ("Compare with the study of March 2024.", "Compare with the study of [DATE]."),
    *((sentence, sentence) for sentence in [
        "Report for CT Abdomen.", "A scan of the Liver.", "Please do a review of Systems.",
        "Booked for Follow-up in 6 months.", "Is this typical for Hodgkin Lymphoma?", "Could this be a sign of Crohn's disease?",
        "Treatment of Graves' disease is planned.", "The patient was referred from Radiology.", "Request For Consultation",
        "A history of Breast Cancer in the family.", "Scored for Bosniak Classification IIF.", "What does the report of Monday say?",
        "Results from Tuesday, and a repeat for X-ray.", "Reason For Exam: Pain.", "Any sign of Metastases?",
        "What is the size of Segment 7?", "Screening for Lung-RADS 2.", "A second opinion from Oncology.",
        "In light of Today's findings, repeat the scan.", "Regarding the MRI, is it normal?", "Re: Follow-up CT",
        "The criteria of Fleischner Society apply.", "Questions about Contrast and Kidney Function.",
        "What is the risk for Pancreatic Cancer?", "Is the lesion typical of Hemangioma?", "A letter from Medicare arrived.",
        "Any risk of Stroke?", "Is it a sign of Diabetes?", "A summary for Primary Care.",
    ]),
]


def _cued_name_messages(count: int, seed: int = 11) -> list[tuple[str, str, list[str]]]:
    """(message, the message with [NAME] in place of the name, the name's words) after the cues above."""
    rng, messages = random.Random(seed), []
    for index in range(count):
        template = PREPOSITION_CUE_TEMPLATES[index % len(PREPOSITION_CUE_TEMPLATES)]
        first, middle, last = rng.choice(UNLISTED_FIRST), rng.choice(UNLISTED_FIRST), rng.choice(UNLISTED_LAST)
        key = re.search(r"\{(\w+)\}", template).group(1)
        name = {"name": f"{first} {last}", "first": first, "last": last, "three": f"{first} {middle} {last}"}[key]
        messages.append((template.format(**{key: name}), template.format(**{key: "[NAME]"}), re.split(r"[ -]", name)))
    return messages


def test_unlisted_names_after_a_preposition_or_verb_are_redacted(redactor: TextRedactor) -> None:
    first_names, surnames = phi_names.load_gazetteer()
    assert not {part.lower() for word in UNLISTED_FIRST + UNLISTED_LAST for part in word.split("-")} & (first_names | surnames)
    messages = _cued_name_messages(90)
    planted = leaked = exact = 0
    for message, ideal, words in messages:
        redacted = redactor.redact(message).text
        leaks = [word for word in words if _leaked(word, redacted)]
        planted, leaked, exact = planted + len(words), leaked + len(leaks), exact + (redacted == ideal)
        assert not leaks, f"{len(leaks)} name word(s) survived in a message rewritten as: {redacted!r}"
    print(f"cued unlisted names: recall {1 - leaked / planted:.3f} on {planted} name words in {len(messages)} messages; "
          f"{exact / len(messages):.3f} rewritten exactly")
    assert exact == len(messages), "a cue took more or fewer words than the name"


@pytest.mark.parametrize(("sentence", "expected"), NOT_NAMES_AFTER_CUES)
def test_title_case_words_after_a_cue_that_are_not_names(redactor: TextRedactor, sentence: str, expected: str) -> None:
    result = redactor.redact(sentence)
    assert result.text == expected and "NAME" not in result.counts


def test_a_possessive_name_before_a_disease_is_still_a_name(redactor: TextRedactor) -> None:
    # "Crohn's disease" is an eponym; "Thandeka's disease" is a person's
    assert redactor.redact("What about Thandeka's disease?").text == "What about [NAME]'s disease?"
    assert redactor.redact("The report for Mary White, please.").text == "The report for [NAME], please."


def test_a_planted_name_is_not_left_unchanged(redactor: TextRedactor) -> None:
    message = "Small hypodense lesion in the liver, my name is Tadhg Ó Súilleabháin."
    result = redactor.redact(message)
    assert result.text == "Small hypodense lesion in the liver, my name is [NAME]."
    assert result.counts == {"NAME": 1}


def test_summary_counts_kinds_and_never_shows_a_value(redactor: TextRedactor) -> None:
    assert Redaction("x", {"NAME": 2, "DATE": 1}).summary() == "removed from your message: 2 names, 1 date"
    assert Redaction("x", {"ADDRESS": 2, "ID": 1}).summary() == "removed from your message: 1 ID, 2 addresses"
    assert Redaction("x", {}).summary() == ""
    shape = re.compile(r"removed from your message: \d+ [A-Za-z 0-9]+(, \d+ [A-Za-z 0-9]+)*")
    for message, _, values in MESSAGES[:60]:
        result = redactor.redact(message)
        summary = result.summary()
        assert shape.fullmatch(summary), summary
        assert not any(_leaked(value, summary) or _leaked(value, repr(result)) for value in values)


def test_no_removed_value_reaches_a_log_record(redactor: TextRedactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for message, _, values in MESSAGES[:40]:
        redactor.redact(message)
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert not any(_leaked(value, logged) for value in values)
    assert any(record.name == phi_text.__name__ for record in caplog.records)  # the redactor did log, without values


def test_errors_name_the_problem_but_not_the_text(redactor: TextRedactor) -> None:
    with pytest.raises(AssistantError, match="must be a str, not bytes"):
        redactor.redact(b"John Smith")
    secret = "Patient Kwabena Owusu-Ansah " * (MAX_TEXT_CHARS // 20)
    with pytest.raises(AssistantError, match="at most 100,000") as error:
        redactor.redact(secret)
    assert "Kwabena" not in str(error.value)
    with pytest.raises(AssistantError, match="score_threshold"):
        TextRedactor(score_threshold=1.5)


def test_empty_and_blank_text(redactor: TextRedactor) -> None:
    assert redactor.redact("") == Redaction("", {})
    assert redactor.redact("  \n ") == Redaction("  \n ", {})


def test_text_at_the_length_limit_is_redacted_in_reasonable_time(redactor: TextRedactor) -> None:
    filler = " ".join(CLINICAL_SENTENCES) + " "
    planted = "Patient Ngozi Okonjo-Iweala, MRN 77120044, phone 303-555-0182. "
    text = (filler * (MAX_TEXT_CHARS // len(filler)))[: MAX_TEXT_CHARS - len(planted)] + planted
    assert len(text) <= MAX_TEXT_CHARS
    start = time.perf_counter()
    result = redactor.redact(text)
    elapsed = time.perf_counter() - start
    assert result.text.endswith("Patient [NAME], MRN [ID], phone [PHONE]. ")
    assert "Okonjo" not in result.text and elapsed < 20, f"{elapsed:.1f} s"


def test_the_analyzer_is_built_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    real_build = phi_text._build_analyzer
    monkeypatch.setattr(phi_text, "_build_analyzer", lambda: builds.append(1) or real_build())
    fresh, results = TextRedactor(), []
    threads = [threading.Thread(target=lambda: results.append(fresh.redact("Mr. Haugen called 212-555-0143").text))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and results == ["Mr. [NAME] called [PHONE]"] * 4
    assert "Haugen" not in repr(fresh)


def test_nothing_reaches_for_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1:2])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # tldextract would look up the public suffix list's host
    result = TextRedactor().redact("mail a.b@example.co.uk, see https://www.example.org/x or example.health/y")
    assert result.counts == {"EMAIL": 1, "URL": 2} and attempts == []


def test_missing_presidio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "presidio_analyzer", None)
    with pytest.raises(AssistantError, match="pip install presidio-analyzer"):
        TextRedactor().redact("Patient John Smith")


@pytest.mark.parametrize("module", [phi_text, phi_names])
def test_heavy_libraries_are_imported_lazily(module: object) -> None:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top_level |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert not top_level & {"presidio_analyzer", "spacy", "phonenumbers", "regex", "names"}


def test_shared_redactor_is_one_instance() -> None:
    assert redact_text("Mr. Haugen") == redact_text("Mr. Haugen") == Redaction("Mr. [NAME]", {"NAME": 1})
