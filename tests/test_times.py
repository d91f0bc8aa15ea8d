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
     ("1e3", "expected seconds"), ("nan", "expected seconds"), ("1:2:3:4", "expected seconds"), (float("inf"), "must be a non-negative")],
)
def test_a_time_is_refused_unless_it_reads_one_way(value, message):
    with pytest.raises(UserError, match=f"^--start {value!r}: {message}"):
        parse_time(value, "--start")
