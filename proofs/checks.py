"""What the offline verifier reports: one Check per step, collected in a VerificationResult.
A step that fails raises StopChecks when later steps would rely on unauthenticated data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str  # stable identifier, e.g. "envelope", "inclusion[12]"
    ok: bool
    detail: str  # one human sentence, printed after "ok  " or "FAIL "

    @property
    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL '}{self.detail}"


@dataclass
class VerificationResult:
    ok: bool = False
    checks: list[Check] = field(default_factory=list)
    payload: dict[str, Any] | None = None  # set once the envelope and schema checks passed
    summary: str = ""

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        return failed[0].detail if failed else ""


class StopChecks(Exception):
    """Internal: a check failed; later checks would rely on unauthenticated data."""


class CertificateFormatError(ValueError):
    """The input is neither a certificate JSON envelope nor a PDF that embeds one."""


