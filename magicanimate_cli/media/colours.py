"""A video's colours as an ordinary (SDR, BT.709) screen shows them: HDR video (HLG, PQ) tone mapped
and wide-gamut (BT.2020) video converted by ffmpeg's ``zscale`` (``shown_colours``); one warning
line where the ffmpeg in use lacks it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from ..errors import InputWarning, shown
from .ffmpeg import ffmpeg_binary, has_filter

REFERENCE_WHITE = 203.0
"""cd/m² of HDR's reference (diffuse) white (BT.2408; HLG's 75 % signal), shown as SDR white."""
HDR_PEAK = 1000.0
"""cd/m² of the brightest HDR highlight kept apart: HLG's nominal display peak (BT.2100), the
usual mastering peak of PQ video (HDR10 from phones and cameras); brighter ones clip."""
HDR_TRANSFERS = {"arib-std-b67": "HLG", "smpte2084": "PQ"}
_COLOURS = re.compile(r"\b([\w-]+)/([\w-]+)/([\w-]+)\b")  # the header's matrix/primaries/transfer


def video_colours(header: dict) -> tuple[str, str, str]:
    """The (matrix, primaries, transfer) the header names, in ffmpeg's words, read from its pixel
    format (``yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67)``); ``unknown`` for each when it names
    none of them or one name for all three (``yuv420p(tv, bt709)``: no HDR, no BT.2020)."""
    found = _COLOURS.search(str(header.get("pix_fmt") or ""))
    return found.groups() if found else ("unknown", "unknown", "unknown")


def shown_colours(stream, path: Path, header: dict):
    """``stream`` in the colours a player shows on an ordinary (SDR, BT.709) screen, where it needs
    it: HDR video (HLG, an iPhone's default, or PQ: HDR10 from other phones and cameras) tone
    mapped, and wide-gamut (BT.2020) video taken into BT.709's primaries; any other passes
    unchanged, byte for byte.

    HDR is made linear with ``REFERENCE_WHITE`` as 1.0 (zimg applies HLG's OOTF for a 1000 cd/m²
    display), so the reference white of BT.2408 becomes SDR white and what an SDR version of the
    video shows (skin, clothes: up to half that white) keeps its colour and contrast; the
    highlights above that up to ``HDR_PEAK`` are compressed into the rest (ffmpeg's ``mobius``,
    whose knee sits where BT.2390's in players does, unlike ``hable``, which darkens everything),
    and desaturated where they are brighter than twice the reference white. Frames are encoded for
    BT.709 (BT.1886) screens, as SDR video is. This needs ffmpeg's ``zscale`` filter (libzimg):
    without it the video is read as it was before, with one ``warning:`` line saying so and the fix.
    """
    matrix, primaries, transfer = video_colours(header)
    hdr = HDR_TRANSFERS.get(transfer)
    if hdr is None and primaries != "bt2020":
        return stream
    if not has_filter("zscale"):
        _warn_colours(path, hdr)
        return stream
    given = {"min": matrix, "pin": primaries, "tin": transfer}  # the header's word (the frames may carry none), BT.2020's where it says none
    given = {key: name if name != "unknown" else default for (key, name), default in zip(given.items(), ("bt2020nc", "bt2020", "bt2020-10"))}
    stream = stream.filter("zscale", t="linear", npl=REFERENCE_WHITE, p=given["pin"], **given).filter("format", "gbrpf32le").filter("zscale", p="709")
    if hdr is not None:
        stream = stream.filter("tonemap", "mobius", param=0.5, desat=2, peak=HDR_PEAK / REFERENCE_WHITE)
    return stream.filter("zscale", t="709").filter("format", "gbrp")


_WARNED_COLOURS: set[str] = set()


def _warn_colours(path: Path, hdr: str | None) -> None:
    """The one ``warning:`` line (``InputWarning``, once per video) of a video read without the
    conversion ``shown_colours`` gives it, for want of ``zscale``."""
    if str(path) in _WARNED_COLOURS:
        return
    _WARNED_COLOURS.add(str(path))
    what = f"HDR video ({hdr}) read without tone mapping, so its colours look dark and washed out" if hdr else \
        "wide-gamut (BT.2020) video read without converting its colours, so they look washed out"
    warnings.warn(InputWarning(f"{shown(path)}: {what}: the ffmpeg in use ({ffmpeg_binary()}) lacks the zscale filter (libzimg); "
                               "install an ffmpeg built with libzimg, or take that one off PATH so imageio-ffmpeg's own is used"),
                  stacklevel=4)
