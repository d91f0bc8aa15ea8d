"""``errors``: how a warning that lets the run go on is shown."""

from __future__ import annotations

import warnings

import pytest

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


def test_said_warnings_lists_each_input_warning_as_it_is_shown_and_keeps_the_receivers_before_it(capsys, monkeypatch):
    from magicanimate_cli.errors import said_warnings

    monkeypatch.setattr(warnings, "showwarning", lambda *args: None)
    sent = []
    with warnings.catch_warnings():
        warnings.resetwarnings()  # no filter of the caller's: Python's default shows a place once
        warn_in_one_line(also=sent.append)  # serve: to the client
        with said_warnings() as said:
            for _ in range(2):  # the same place twice: shown, sent and listed twice
                warnings.warn("out.mp4: written without the sound of in.mkv", InputWarning, stacklevel=1)
            warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        warnings.warn("after.mp4: not DensePose", InputWarning, stacklevel=1)  # outside: no longer listed
    assert said == ["out.mp4: written without the sound of in.mkv"] * 2
    assert sent == said + ["after.mp4: not DensePose"]
    assert capsys.readouterr().err.splitlines() == [f"warning: {text}" for text in sent]


@pytest.mark.parametrize("action", ["error", "ignore", "default"])
def test_said_warnings_leaves_the_callers_own_filters_their_word(capsys, action):
    from magicanimate_cli.errors import said_warnings

    with warnings.catch_warnings():
        warnings.simplefilter(action, InputWarning)  # PYTHONWARNINGS=error, a library caller's filter, ...
        with said_warnings() as said:
            try:
                for _ in range(2):
                    warnings.warn("out.mp4: written without the sound of in.mkv", InputWarning, stacklevel=1)
            except InputWarning as raised:
                said.append(f"raised: {raised}")
    assert said == {"error": ["raised: out.mp4: written without the sound of in.mkv"], "ignore": [],
                    "default": ["out.mp4: written without the sound of in.mkv"]}[action]
    assert len(capsys.readouterr().err.splitlines()) == (1 if action == "default" else 0)


def test_a_batch_tasks_warnings_are_its_own_and_still_reach_its_client(capsys):
    from magicanimate_cli.errors import said_warnings

    sent = []
    with warnings.catch_warnings():
        warnings.resetwarnings()  # not pytest's filters (they ignore InputWarning)
        with said_warnings() as server_run:  # serve's own run, for its whole life
            with said_warnings(alone=True) as task:  # one task
                warn_in_one_line(also=sent.append)  # its client
                warnings.warn("poses.mp4: not DensePose", InputWarning, stacklevel=1)
    assert task == sent == ["poses.mp4: not DensePose"] and server_run == []
    assert capsys.readouterr().err == "warning: poses.mp4: not DensePose\n"


def test_with_warnings_keeps_the_results_own_list_first_and_adds_each_other_one_once():
    from magicanimate_cli.errors import with_warnings

    own = {"output": "out.mp4", "warnings": ["poses.mp4: not DensePose"], "seconds": 1.0}
    said = ["poses.mp4: not DensePose", "out.mp4: written without the sound of in.mkv", "out.mp4: written without the sound of in.mkv"]
    assert with_warnings(own, said) == {**own, "warnings": ["poses.mp4: not DensePose", "out.mp4: written without the sound of in.mkv"]}
    assert list(with_warnings(own, said)) == ["output", "warnings", "seconds"]  # in its place
    assert with_warnings({"output": "out/"}, []) == {"output": "out/"}  # nothing said: no empty list in every result
    assert with_warnings({"output": "out/", "warnings": []}, []) == {"output": "out/", "warnings": []}
