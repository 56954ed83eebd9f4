"""Statutory deadlines of GDPR Art. 12(3). Pure date arithmetic, no Django.

"Within one month of receipt of the request", extendable "by two further months where necessary".
A month runs to the same day of the next month; when that day does not exist (31 January -> February)
the deadline is the last day of that month (the rule of Regulation 1182/71 art. 3(2)(c), which the
EDPB applies to GDPR periods). The extended deadline counts three months from the same start, so
31 January gives 28/29 February, extended to 30 April (not 28 April).
"""

from __future__ import annotations

import calendar
from datetime import date

DEADLINE_MONTHS = 1
EXTENSION_MONTHS = 2


def add_months(start: date, months: int) -> date:
    """Same day `months` later, clamped to the last day of the target month."""
    if months < 0:
        raise ValueError("months must be >= 0")
    month_index = start.month - 1 + months
    year = start.year + month_index // 12
    month = month_index % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    return date(year, month, min(start.day, last_day))


def first_deadline(clock_start: date) -> date:
    return add_months(clock_start, DEADLINE_MONTHS)


def extended_deadline(clock_start: date) -> date:
    return add_months(clock_start, DEADLINE_MONTHS + EXTENSION_MONTHS)


def days_left(due: date, today: date) -> int:
    """Negative when overdue."""
    return (due - today).days
