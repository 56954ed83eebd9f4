from datetime import date

import pytest

from compliance.erasure.deadlines import add_months, days_left, extended_deadline, first_deadline


@pytest.mark.parametrize(
    ("start", "due"),
    [
        (date(2026, 1, 31), date(2026, 2, 28)),  # no 31 February: last day of the month
        (date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (date(2028, 1, 29), date(2028, 2, 29)),
        (date(2028, 2, 29), date(2028, 3, 29)),  # from a leap day: same day next month
        (date(2026, 3, 31), date(2026, 4, 30)),
        (date(2026, 12, 15), date(2027, 1, 15)),  # year end
        (date(2026, 12, 31), date(2027, 1, 31)),
        (date(2026, 5, 10), date(2026, 6, 10)),
    ],
)
def test_first_deadline_is_same_day_next_month_or_last_day(start: date, due: date) -> None:
    assert first_deadline(start) == due


@pytest.mark.parametrize(
    ("start", "extended"),
    [
        (date(2026, 1, 31), date(2026, 4, 30)),  # three months from the start, not two from the clamped due date
        (date(2026, 11, 30), date(2027, 2, 28)),
        (date(2027, 11, 30), date(2028, 2, 29)),
        (date(2026, 10, 31), date(2027, 1, 31)),
    ],
)
def test_extended_deadline_counts_three_months_from_the_start(start: date, extended: date) -> None:
    assert extended_deadline(start) == extended


def test_add_months_rejects_negative() -> None:
    with pytest.raises(ValueError):
        add_months(date(2026, 1, 1), -1)


def test_days_left_is_negative_when_overdue() -> None:
    assert days_left(date(2026, 1, 10), date(2026, 1, 12)) == -2
    assert days_left(date(2026, 1, 10), date(2026, 1, 3)) == 7
