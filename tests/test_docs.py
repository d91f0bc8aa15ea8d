"""The documentation describes the code as it is."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_architecture_diagram_lists_the_preprocess_stages_in_the_order_they_run():
    diagram = (REPO / "docs" / "architecture.md").read_text().split("```", 2)[1]
    first_row = diagram.strip().splitlines()[0]
    source = (REPO / "magicanimate_cli" / "preprocess.py").read_text()
    ran = re.findall(r'run_stage\("(\w+)"', source)
    shown = [name for name in re.findall(r"\w+", first_row) if name in ran]
    assert shown == ran, f"diagram {shown} vs preprocess {ran}"


def test_every_test_named_in_the_reliability_table_exists():
    table = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"([\w/]+\.py)::(test_\w+)", table))
    assert named
    missing = [f"{path}::{name}" for path, name in sorted(named)
               if not re.search(rf"^def {name}\(", (REPO / "tests" / path).read_text(), flags=re.M)]
    assert not missing, missing


def _options_by_command() -> dict[str, set[str]]:
    """Every command's option spellings (``"models download"`` for a group's), from the CLI itself."""
    from typer.main import get_command

    from magicanimate_cli.cli import app

    root = get_command(app)
    shared = {opt for param in root.params for opt in param.opts} | {"--help"}  # --debug, --server: also after the command
    found: dict[str, set[str]] = {}

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            found[prefix + name] = shared | {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")

    walk(root, "")
    return found


def _command_lines(text: str) -> list[tuple[int, str, bool]]:
    """The documents' command lines, with the line number each starts on: code blocks (an indented
    line continues the one before) and inline code (``True``: may name a command without
    ``magicanimate``, as in `animate --grid`)."""
    lines, in_block = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block and line[:1].isspace() and lines and not lines[-1][2]:
            lines[-1] = (lines[-1][0], lines[-1][1] + " " + line.strip(), False)
        elif in_block:
            lines.append((number, line.strip(), False))
        else:
            lines.extend((number, span.strip(), True) for span in re.findall(r"`([^`\n]+)`", line))
    return lines


def test_every_option_the_docs_give_a_command_is_one_of_its_options():
    options = _options_by_command()
    names = "|".join(sorted((re.escape(name) for name in options), key=len, reverse=True))
    command = re.compile(rf"(?:\bmagicanimate(?:\s+--server\s+\S+)?\s+|^)({names})(?=\s|$)")
    wrong = []
    for doc in [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]:
        for number, line, inline in _command_lines(doc.read_text()):
            for match in command.finditer(line):
                if match.start() == 0 and not inline and not line.startswith("magicanimate"):
                    continue
                words = re.split(r"\bmagicanimate\b|[#|;&]", line[match.end():])[0]
                for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", words):
                    if option not in options[match.group(1)]:
                        wrong.append(f"{doc.name}:{number}: `{match.group(1)}` has no {option}")
    assert not wrong, wrong
