"""What the verifier knows about a person: the values to look for and the texts they appeared in.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SubjectFacts:
    """One person, as the attacks see them.

    subject_key: a pseudonymous key (the request's subject_ref, a record id): it is what the report
    shows, so it must not be personal data. name: how prompts address the person. values:
    attribute -> value as written in the training data. forget_texts: the training records that
    held the person's data (the verbatim and membership attacks start from them).
    """

    subject_key: str
    name: str
    values: dict[str, str]
    forget_texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.subject_key or not self.subject_key.strip():
            raise ValueError("subject_key must be a non-empty string")
        if not self.name or not self.name.strip():
            raise ValueError(f"subject {self.subject_key}: name must be a non-empty string")
        for attribute, value in self.values.items():
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"subject {self.subject_key}: value of {attribute!r} must be a non-empty string")
        if any(not isinstance(t, str) for t in self.forget_texts):
            raise ValueError(f"subject {self.subject_key}: forget_texts must be strings")
