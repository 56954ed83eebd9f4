"""What the data subject reads about their request: a stepper in plain language.

One function (`subject_progress`) turns a request and its audit timeline into the six steps a person
understands (received, e-mail confirmed, in review, being removed, checked, certificate ready), the
headline for where it stands, what the organisation must do by when, and, for a closed request, the
outcome. The status page and the e-mails use the same `HEADLINES`, so the person reads the same words
everywhere. No internal code (status names, job ids, attack names) reaches the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.selectors import TimelineEntry

STEPS: tuple[tuple[str, str, str], ...] = (
    # key, label, the audit event that completes it
    ("received", "Request received", "request.received"),
    ("confirmed", "E-mail confirmed", "request.verified"),
    ("review", "In review", "request.approved"),
    ("removing", "Being removed", "request.verifying"),
    ("checked", "Checked for leaks", "request.verifying"),
    ("certificate", "Certificate ready", "request.completed"),
)

STEP_TEXT = {
    "received": "We have your request and the legal clock has started.",
    "confirmed": "You confirmed your e-mail address with the link we sent, so we know the request is yours.",
    "review": "We search our training data for your records, score the risk, and a privacy officer decides.",
    "removing": (
        "Your data is filtered out of our models' answers from the moment of approval; it is then removed "
        "from the training data and from the models themselves."
    ),
    "checked": "We attack the new model as an attacker would, and compare it with a model that never saw you.",
    "certificate": "A signed certificate records what was removed and how it was checked.",
}

# Where the request stands, in the words the status page and every e-mail use.
HEADLINES = {
    Status.RECEIVED: "We have your request. Please confirm your e-mail address with the link we sent you: until then we cannot act on it.",
    Status.VERIFIED: "Your e-mail address is confirmed. We are searching our training data for your records.",
    Status.TRIAGED: "We have found where your data is, and a privacy officer is reviewing your request.",
    Status.APPROVED: (
        "Your request was approved. Our models' answers are already filtered so that they do not show your data, "
        "and we are removing it from our training data and from the models."
    ),
    Status.UNLEARNING: "We are removing your data from our models and testing the result for leaks.",
    Status.NEEDS_DECISION: (
        "Our tests could not yet confirm that your data is gone from a model. A privacy officer is deciding the "
        "next step: another removal method, or a decision we will explain to you. Meanwhile the filter keeps your "
        "data out of the models' answers."
    ),
    Status.VERIFYING: "Your data was removed and the tests found no trace of it. A privacy officer is signing your certificate.",
    Status.COMPLETED: "Done: your data was removed from our training data and models, and your certificate is ready.",
    Status.REFUSED: "We decided not to erase your data. The reasons and your rights are below.",
    Status.WITHDRAWN: "You withdrew this request, so we stopped working on it.",
    Status.SUPPRESSED: (
        "We closed your request without a certificate of erasure. Your records were removed from our training data "
        "and a filter keeps your data out of our models' answers, but we could not confirm that the models "
        "themselves no longer hold it. The reasons and your rights are below."
    ),
    Status.PURGED: "This request is closed, and the personal data it held has been destroyed as our retention policy requires.",
}

CERTIFICATE_MEANING = (
    "The certificate is a document we sign with our published key. It lists the training data versions your "
    "records were removed from, the model versions that replaced the ones trained on them, and the attacks we ran "
    "against the new models (direct questions, reworded and jailbreak prompts, statistical tests, fine-tuning and "
    "compression) with their results next to a model that never saw you. It holds no personal data about you. "
    "Anyone can check, without asking us, that we signed it and that it is recorded in our public audit log."
)

# How far the steps got for each status: the number of steps done, and whether the next one is under way.
_DONE = {
    Status.RECEIVED: 1,
    Status.VERIFIED: 2,
    Status.TRIAGED: 2,
    Status.APPROVED: 3,
    Status.UNLEARNING: 3,
    Status.NEEDS_DECISION: 3,
    Status.VERIFYING: 5,
    Status.COMPLETED: 6,
}
_CLOSED = frozenset({Status.REFUSED, Status.WITHDRAWN, Status.SUPPRESSED, Status.PURGED})


# The events the person reads in "what has happened so far", in plain words. Everything else in the
# audit log (job claims, checkpoints, guard rule counts) is the organisation's bookkeeping.
SUBJECT_EVENTS = {
    "request.received": "Request received",
    "request.duplicate": "Same request filed again (merged)",
    "request.verified": "E-mail address confirmed",
    "request.triaged": "Training data searched and risk scored",
    "request.approved": "Erasure approved; output filter switched on",
    "request.refused": "Erasure refused",
    "request.extended": "Deadline extended (Art. 12(3))",
    "request.unlearning": "Removing the data from the models",
    "request.needs_decision": "Tests could not confirm the removal; an officer decides the next step",
    "request.suppressed": "Closed without a certificate; output filter stays on",
    "request.verifying": "Tests found no trace of the data",
    "request.completed": "Completed; certificate issued",
    "request.withdrawn": "Withdrawn",
    "request.purged": "Personal data destroyed",
}


@dataclass(frozen=True)
class Happened:
    at: datetime
    label: str


def subject_timeline(timeline: list[TimelineEntry]) -> list[Happened]:
    """The request's events the person should read, each once per occurrence, in plain words."""
    out = []
    for entry in timeline:
        label = SUBJECT_EVENTS.get(entry.event)
        if label is None:
            continue
        try:
            at = datetime.fromisoformat(entry.at.replace("Z", "+00:00"))
        except ValueError:
            continue
        out.append(Happened(at=at, label=label))
    return out


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    state: str  # "done", "current", "todo" or "stopped" (a closed request never reached it)
    text: str
    when: str  # the date it was done, or "" (expected dates are the request's deadline)


@dataclass(frozen=True)
class SubjectProgress:
    headline: str
    steps: list[Step]
    closed: bool
    due: date | None  # the date by which we must finish, while open
    extended: bool
    waiting_on_you: bool  # the next step is the person's (confirm the e-mail)


def _first_dates(timeline: list[TimelineEntry]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for entry in timeline:
        seen.setdefault(entry.event, entry.at[:10])
    return seen


def subject_progress(request: ErasureRequest, timeline: list[TimelineEntry]) -> SubjectProgress:
    status = Status(request.status)
    dates = _first_dates(timeline)
    closed = status in _CLOSED
    if closed:
        # A closed request shows the steps it completed; the rest did not happen.
        done = sum(1 for _key, _label, event in STEPS if event in dates)
    else:
        done = _DONE[status]
    steps = []
    for i, (key, label, event) in enumerate(STEPS):
        if i < done:
            state = "done"
        elif closed:
            state = "stopped"
        elif i == done:
            state = "current"
        else:
            state = "todo"
        steps.append(Step(key=key, label=label, state=state, text=STEP_TEXT[key], when=dates.get(event, "") if state == "done" else ""))
    return SubjectProgress(
        headline=HEADLINES[status],
        steps=steps,
        closed=closed or status == Status.COMPLETED,
        due=None if (closed or status == Status.COMPLETED) else request.effective_due,
        extended=request.extended_due_at is not None,
        waiting_on_you=status == Status.RECEIVED,
    )
