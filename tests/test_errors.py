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


def test_also_receives_each_input_warning_and_replaces_the_shower_instead_of_stacking_on_it(capsys, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", lambda *args: None)
    sent = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warn_in_one_line()
        warn_in_one_line(also=sent.append)  # serve: to the client too
        warn_in_one_line()  # the task's own call leaves it as it is
        warnings.warn("poses.mp4: not DensePose", InputWarning, stacklevel=1)
        warnings.warn("poses.mp4: not DensePose", InputWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == ["warning: poses.mp4: not DensePose"] * 2
    assert sent == ["poses.mp4: not DensePose"] * 2
