"""The offline Presidio analyzer: built once per process from an explicit `EngineConfig`.

Two guarantees matter more than anything else here:

1. **No network, ever.** Presidio's default `NlpEngineProvider` downloads `en_core_web_lg` when it is
   missing, and its e-mail recognizer calls `tldextract.extract`, whose default extractor fetches the
   public suffix list over HTTP on first use. We therefore (a) build the spaCy pipeline ourselves
   (`spacy.load` of an *installed* package, else `spacy.blank("en")`; `spacy.cli.download` is never
   reached) and (b) replace the e-mail recognizer's validation with a `TLDExtract` that has no suffix
   list URLs and no cache directory, so it reads the snapshot bundled with the package.
2. **Say what is active.** With a blank pipeline there is no NER: PERSON and LOCATION come only from a
   real spaCy model or from the identifier matcher (`pii.matcher`). `PiiAnalyzer.description` lists
   the NLP pipeline and every active recognizer, so a report can state what the scan could and could
   not see.

Recognizers we add where Presidio has none for our synthetic formats (all `PatternRecognizer`s, see
`_custom_recognizers`): PASSPORT (letter + 8 digits, with passport context), DRIVER_LICENSE
(UK DVLA-like 5+6+2), MEDICAL_RECORD_NUMBER (MRN-NNNNNNN), ZIP_CODE (UK-style postcode),
DATE_OF_BIRTH (a date introduced by "born", "DOB", "date of birth"), PHONE_NUMBER (a North American
number in its groups, whatever its area code), STREET_ADDRESS (number + name + street kind) and
GENDER (gender words after "gender"/"sex" or as pronoun-less self-description).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    CryptoRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

logger = logging.getLogger(__name__)

# The suffix list bundled with tldextract, never refreshed over the network. `cache_dir=None` also
# keeps it from writing into the user's home directory.
OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer with a tldextract that can only use its bundled snapshot."""

    def validate_result(self, pattern_text: str) -> bool:
        return OFFLINE_TLD_EXTRACT(pattern_text).fqdn != ""


class BlankAwareSpacyNlpEngine(SpacyNlpEngine):
    """A SpacyNlpEngine that loads an installed pipeline or a blank one, and never downloads.

    Blank pipelines have no lemmatizer, so `token.lemma_` is empty and Presidio's context enhancer
    (which compares context words with lemmas) would never fire; we fall back to the lower-cased
    token text, which is what a lemma of "passport" or "phone" is anyway.
    """

    def __init__(self, *, language: str, model_name: str | None) -> None:
        super().__init__(
            models=[{"lang_code": language, "model_name": model_name or f"blank:{language}"}],
            ner_model_configuration=NerModelConfiguration(),
        )
        self._language = language
        self._model_name = model_name
        self.pipeline_name = ""

    def load(self) -> None:
        if self._model_name and (spacy.util.is_package(self._model_name) or _is_model_dir(self._model_name)):
            nlp = spacy.load(self._model_name)
            self.pipeline_name = f"spacy:{self._model_name}"
        else:
            nlp = spacy.blank(self._language)
            self.pipeline_name = f"spacy.blank({self._language!r})"
        self.nlp = {self._language: nlp}  # type: ignore[assignment]  # Presidio annotates None

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        artifacts = super()._doc_to_nlp_artifact(doc, language)
        artifacts.lemmas = [lemma or token.lower_ for lemma, token in zip(artifacts.lemmas, doc, strict=True)]
        return artifacts

    @property
    def has_ner(self) -> bool:
        pipelines: dict[str, Any] = self.nlp or {}
        return self._language in pipelines and "ner" in pipelines[self._language].pipe_names


def _is_model_dir(name: str) -> bool:
    """A spaCy pipeline saved as a directory (it has a config.cfg); only local paths, never a hub id."""
    from pathlib import Path

    path = Path(name)
    return path.is_dir() and (path / "config.cfg").is_file()


def spacy_model_installed(model_name: str) -> bool:
    """Whether `model_name` can be loaded without any download."""
    return spacy.util.is_package(model_name) or _is_model_dir(model_name)


@dataclass(frozen=True)
class EngineConfig:
    """How to build the analyzer. Hashable: `build_analyzer` caches one engine per distinct config.

    spacy_model: name of an installed spaCy package or a local pipeline directory. None, or a name
        that is not installed, gives a blank pipeline (no NER) unless `require_model` is set.
    require_model: raise instead of falling back when `spacy_model` is not installed; for deployments
        that must not silently lose PERSON/LOCATION detection.
    language: the only language we analyse; the recognizers are English-language patterns.
    phone_regions: regions the phonenumbers-based recognizer tries; the default covers the formats of
        our corpora (US/UK/EU) while keeping false positives from long digit runs low.
    disabled_recognizers: names (as in `PiiAnalyzer.description["recognizers"]`) to leave out, for an
        organisation whose corpora make one of them noisy.
    """

    spacy_model: str | None = None
    require_model: bool = False
    language: str = "en"
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IE", "CA", "AU")
    disabled_recognizers: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.language != "en":
            raise ValueError("EngineConfig.language: only 'en' is supported by the pattern recognizers")
        if self.spacy_model is not None and not self.spacy_model.strip():
            raise ValueError("EngineConfig.spacy_model must be None or a non-empty name")
        if not self.phone_regions:
            raise ValueError("EngineConfig.phone_regions must name at least one region")
        if not isinstance(self.disabled_recognizers, frozenset):
            object.__setattr__(self, "disabled_recognizers", frozenset(self.disabled_recognizers))
        if self.require_model and not self.spacy_model:
            raise ValueError("EngineConfig.require_model needs spacy_model")


# Dates as our corpora and most English text write them: ISO, d/m/y, "3 March 1987", "March 3, 1987".
_MONTHS = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_DATE = (
    r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{1,2}\s+" + _MONTHS + r"\.?,?\s+\d{4}|"
    + _MONTHS + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"
)


class DateOfBirthRecognizer(EntityRecognizer):
    """A date introduced by birth context ("born on", "DOB:", "date of birth"); the span is the date only.

    A PatternRecognizer would report the whole "born on 1987-03-04" span; anonymisation and the PRI
    attribute both want just the date.
    """

    _REGEX = re.compile(
        r"\b(?:born(?:\s+on)?|d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday)\b\s*(?:is|was|:|-)?\s*(?:on\s+)?("
        + _DATE
        + r")",
        re.IGNORECASE,
    )

    def __init__(self) -> None:
        super().__init__(supported_entities=["DATE_OF_BIRTH"], name="DateOfBirthRecognizer", supported_language="en")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        return [
            RecognizerResult("DATE_OF_BIRTH", match.start(1), match.end(1), 0.85)
            for match in self._REGEX.finditer(text)
        ]


def _custom_recognizers() -> list[EntityRecognizer]:
    """Recognizers for attribute formats Presidio has no recognizer for (see module docstring)."""
    return [
        PatternRecognizer(
            supported_entity="PASSPORT",
            name="PassportRecognizer",
            # One letter and eight digits (our synthetic and the US next-generation form). Weak alone
            # because such strings also appear as order numbers; context "passport" raises it.
            patterns=[Pattern("passport letter+8 digits", r"\b[A-Z][0-9]{8}\b", 0.35)],
            context=["passport", "travel document"],
            global_regex_flags=re.DOTALL | re.MULTILINE,  # case-sensitive: the letter is upper case
        ),
        PatternRecognizer(
            supported_entity="DRIVER_LICENSE",
            name="DriverLicenceRecognizer",
            # UK DVLA-like: 5 letters of the surname padded with 9, 6 digits, check letter, 9.
            patterns=[Pattern("licence 5+6+2", r"\b[A-Z9]{5}[0-9]{6}[A-Z][0-9A-Z]\b", 0.6)],
            context=["licence", "license", "driving", "driver"],
            global_regex_flags=re.DOTALL | re.MULTILINE,
        ),
        PatternRecognizer(
            supported_entity="MEDICAL_RECORD_NUMBER",
            name="MedicalRecordNumberRecognizer",
            patterns=[Pattern("MRN-NNNNNNN", r"\bMRN[-\s:]?[0-9]{7}\b", 0.85)],
            context=["medical", "record", "patient", "mrn"],
        ),
        PatternRecognizer(
            supported_entity="ZIP_CODE",
            name="UkStylePostcodeRecognizer",
            patterns=[Pattern("UK-style postcode", r"\b[A-Z]{1,2}[0-9][0-9A-Z]?\s?[0-9][ABD-HJLNP-UW-Z]{2}\b", 0.5)],
            context=["postcode", "post code", "zip", "postal"],
            global_regex_flags=re.DOTALL | re.MULTILINE,
        ),
        DateOfBirthRecognizer(),
        PatternRecognizer(
            supported_entity="PHONE_NUMBER",
            name="GroupedPhoneRecognizer",
            # A North American number written in its groups: (NNN) NNN-NNNN, NNN-NNN-NNNN, NNN.NNN.NNNN,
            # +1 first or not. Presidio's PhoneRecognizer keeps only numbers the phonenumbers library
            # holds valid, so an unassigned area code goes unseen: on the demo corpus's fictitious
            # people it found 222 of 400 phones. The grouping itself is the evidence here (area and
            # exchange codes start 2-9, as NANP numbers do; an SSN's 3-2-4 and a date's 4-2-2 do not fit)
            patterns=[Pattern(
                "NANP grouped",
                r"(?<![\w+\-.])(?:\+1[ .\-]?|1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}(?![\w\-]|\.[0-9])",
                0.5,
            )],
            context=["phone", "call", "tel", "telephone", "mobile", "cell", "reached", "contact"],
        ),
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[
                Pattern(
                    "number street kind",
                    r"\b[0-9]{1,5}[A-Za-z]?,?\s+(?:[A-Z][a-z]+\s+){1,3}"
                    r"(?:Street|St|Road|Rd|Lane|Ln|Avenue|Ave|Close|Way|Drive|Dr|Court|Ct|Place|Pl|Terrace|Crescent|Boulevard|Blvd)\b\.?",
                    0.6,
                )
            ],
            context=["address", "lives", "live", "resides", "street"],
            global_regex_flags=re.DOTALL | re.MULTILINE,
        ),
        PatternRecognizer(
            supported_entity="GENDER",
            name="GenderRecognizer",
            patterns=[
                Pattern(
                    "gender after label",
                    r"(?<=\b(?:gender|sex)\s{0,3}[:=-]?\s{0,3})(?:female|male|non-binary|nonbinary|woman|man)\b",
                    0.75,
                ),
                Pattern("gender word", r"\b(?:female|male|non-binary|nonbinary)\b", 0.4),
            ],
            context=["gender", "sex", "identifies"],
        ),
    ]


def _predefined_recognizers(config: EngineConfig) -> list[EntityRecognizer]:
    return [
        OfflineEmailRecognizer(),
        PhoneRecognizer(supported_regions=list(config.phone_regions)),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        DateRecognizer(),
        UrlRecognizer(),
        CryptoRecognizer(),
    ]


@dataclass(frozen=True)
class PiiAnalyzer:
    """A built Presidio analyzer plus the description of what it can detect."""

    engine: AnalyzerEngine
    config: EngineConfig
    description: dict[str, Any]

    @property
    def language(self) -> str:
        return self.config.language

    def analyze(
        self,
        text: str,
        *,
        ad_hoc_recognizers: Sequence[EntityRecognizer] | None = None,
        score_threshold: float | None = None,
    ) -> list[RecognizerResult]:
        return self.engine.analyze(
            text=text,
            language=self.config.language,
            ad_hoc_recognizers=list(ad_hoc_recognizers) if ad_hoc_recognizers else None,
            score_threshold=score_threshold,
        )


def _name_of(recognizer: Any) -> str:
    # Presidio leaves EntityRecognizer.name untyped.
    return str(recognizer.name)


@functools.lru_cache(maxsize=8)
def _build_cached(config: EngineConfig) -> PiiAnalyzer:
    nlp_engine = BlankAwareSpacyNlpEngine(language=config.language, model_name=config.spacy_model)
    nlp_engine.load()
    if config.require_model and not nlp_engine.pipeline_name.startswith("spacy:"):
        raise ValueError(f"EngineConfig.spacy_model {config.spacy_model!r} is not installed and require_model is set")
    if config.spacy_model and not nlp_engine.pipeline_name.startswith("spacy:"):
        logger.warning("spaCy model %r is not installed: blank pipeline, no NER", config.spacy_model)

    recognizers: list[EntityRecognizer] = _predefined_recognizers(config) + _custom_recognizers()
    if nlp_engine.has_ner:
        # Only a real pipeline has NER; on a blank one SpacyRecognizer would run and find nothing.
        recognizers.append(SpacyRecognizer(supported_entities=["PERSON", "LOCATION", "NRP", "DATE_TIME"]))
    recognizers = [r for r in recognizers if _name_of(r) not in config.disabled_recognizers]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[config.language])
    engine = AnalyzerEngine(
        registry=registry, nlp_engine=nlp_engine, supported_languages=[config.language]
    )
    custom_names = {_name_of(r) for r in _custom_recognizers()}
    description = {
        "nlp_pipeline": nlp_engine.pipeline_name,
        "ner": nlp_engine.has_ner,
        "language": config.language,
        "network": "none (spaCy models only from installed packages; tldextract bundled suffix list)",
        "recognizers": sorted(
            (
                {
                    "name": _name_of(r),
                    "entities": sorted(r.supported_entities),
                    "origin": "pii.engine (synthetic formats)" if _name_of(r) in custom_names else "presidio",
                }
                for r in recognizers
            ),
            key=lambda item: item["name"],
        ),
        "entities": sorted({e for r in recognizers for e in r.supported_entities}),
        "not_detected_without_ner": [] if nlp_engine.has_ner else ["PERSON (except the subject's name)", "LOCATION", "NRP"],
    }
    return PiiAnalyzer(engine=engine, config=config, description=description)


def build_analyzer(config: EngineConfig | None = None) -> PiiAnalyzer:
    """The process-wide analyzer for `config` (default: blank English pipeline), built on first use."""
    return _build_cached(config if config is not None else EngineConfig())
