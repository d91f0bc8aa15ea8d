from __future__ import annotations

import pytest

from magicanimate_cli.errors import UserError
from magicanimate_cli.times import parse_time


def test_parse_time():
    assert parse_time("90") == 90 and parse_time("1:30.5") == 90.5 and parse_time("1:00:00") == 3600 and parse_time(None) is None
    assert parse_time(" 0:0:1.2 ") == 1.2 and parse_time(".5") == 0.5 and parse_time("90:00") == 5400 and parse_time(2) == 2.0


@pytest.mark.parametrize(
    ("value", "message"),
    [("1:-30", "expected seconds"), ("-1", "must be a non-negative"), ("0:90", "minutes and seconds after a colon run from 0 to 59"),
     ("1:60:00", "minutes and seconds after a colon"), ("1_0", "expected seconds"), ("\uff11.\uff12", "expected seconds"),
     ("1e3", "expected seconds"), ("nan", "expected seconds"), ("inf", "expected seconds"), ("-0", "must be a non-negative"), ("1:2:3:4", "expected seconds"), (float("inf"), "must be a non-negative")],
)
def test_a_time_is_refused_unless_it_reads_one_way(value, message):
    with pytest.raises(UserError, match=f"^--start {value!r}: {message}"):
        parse_time(value, "--start")


@pytest.mark.parametrize("value", ["9" * 400 + ":00:00", "9" * 5000 + ":00:00", "1" * 400, "9" * 1_000_001])
def test_a_time_with_more_digits_than_a_float_holds_is_refused_in_one_line(value):
    # was OverflowError (int too large to convert to float), or int()'s 4300-digit ValueError: exit 1
    with pytest.raises(UserError, match=r"^--start '\d+(:00:00)?': too large a number of seconds$"):
        parse_time(value, "--start")


def test_a_clock_field_of_many_digits_is_read_or_refused_in_one_line():
    assert parse_time("1:" + "0" * 5000 + "1") == 61.0
    with pytest.raises(UserError, match="minutes and seconds after a colon run from 0 to 59"):
        parse_time("1:" + "9" * 5000 + ":00", "--start")  # was int()'s 4300-digit ValueError
