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
