"""Times as users type them on the command line (``download --start``, ``animate --start`` and ``--audio-start``)."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from .errors import UserError

_CLOCK = re.compile(r"(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)", re.ASCII)  # [[HH:]MM:]SS[.ms], ASCII digits only


def parse_time(value, what: str = "time") -> float | None:
    """Seconds from ``90``, ``90.5``, ``1:30`` or ``0:01:30.5`` (minutes and seconds after a colon
    below 60); ``what`` names the value in errors (``--start``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        found = _CLOCK.fullmatch(text)
        if found is None:
            if text.startswith("-"):
                raise UserError(f"{what} {value!r}: must be a non-negative number of seconds")
            raise UserError(f"{what} {value!r}: expected seconds (90.5) or [HH:]MM:SS(.ms) (1:30.5)")
        hours, minutes, rest = (Decimal(part) if part else None for part in found.groups())  # any number of digits, exactly
        if (minutes is not None and rest >= 60) or (hours is not None and minutes >= 60):
            raise UserError(f"{what} {value!r}: minutes and seconds after a colon run from 0 to 59; write 1:30 for 90 s")
        try:
            seconds = float((hours or 0) * 3600 + (minutes or 0) * 60 + rest)
        except ArithmeticError:  # decimal.Overflow: a million digits
            seconds = math.inf
        if math.isinf(seconds):  # more than a float holds (was an OverflowError, or int()'s 4300-digit ValueError)
            raise UserError(f"{what} {value!r}: too large a number of seconds")
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(f"{what} {value!r}: must be a non-negative number of seconds")
    return seconds


def frame_at(seconds: float, fps: float) -> int:
    """The first frame at or after ``seconds`` of a clip at ``fps`` (frame ``i`` shows at ``i / fps``;
    a float's last digits of slack, so 0.1 s at 10 fps is frame 1, not 2)."""
    return math.ceil(seconds * fps - 1e-6)


def millis_down(seconds: float) -> float:
    """``seconds`` rounded down to the millisecond: a frame's time given to the user that, typed back
    as a ``--start`` or ``--end``, still takes that frame (below 1000 fps)."""
    return math.floor(seconds * 1000 + 1e-6) / 1000


def seconds_text(seconds: float) -> str:
    """``millis_down(seconds)`` without trailing zeros: ``1.04``, ``2``."""
    return f"{millis_down(seconds):.3f}".rstrip("0").rstrip(".")
