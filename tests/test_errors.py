"""``errors``: how a warning that lets the run go on is shown."""

from __future__ import annotations

import warnings

from magicanimate_cli.errors import InputWarning, warn_in_one_line


def test_an_input_warning_is_one_line_on_stderr_and_other_warnings_are_left_as_they_were(capsys, monkeypatch):
    passed_on = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, *rest: passed_on.append((str(message), category)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warn_in_one_line()
        warn_in_one_line()  # twice: still one line per warning
        warnings.warn("poses.mp4: not\nDensePose", InputWarning, stacklevel=1)
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == ["warning: poses.mp4: not\\nDensePose"]
    assert passed_on == [("an old API", DeprecationWarning)]
