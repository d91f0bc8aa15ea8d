"""The README's two set-up commands stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(python3 -m venv .*?)\n```", setup, flags=re.S)]


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "magicanimate animate" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_main_job_uses_files_that_exist():
    main = readme_commands()[0]
    for path in re.findall(r"\.\./shared/\S+", main):
        assert (REPO / path).exists(), path


def _section(title: str) -> str:
    return (REPO / "README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_animate_synopsis_lists_every_option_of_the_command():
    from typer.main import get_command

    from magicanimate_cli.cli import app

    synopsis = _section("`magicanimate animate`").split("```", 2)[1]
    command = get_command(app).commands["animate"]
    options = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    missing = sorted(o for o in options - {"--output"} if o not in synopsis)
    assert not missing, f"README animate synopsis lacks {missing}"


def test_readme_installs_only_what_a_registry_or_the_checkout_has():
    # the package itself is not on any registry: extras are installed from a checkout or a git URL
    text = (REPO / "README.md").read_text()
    for line in re.findall(r"pip install[^\n`]*magicanimate-cli[^\n`]*", text):
        assert "git+" in line, line
