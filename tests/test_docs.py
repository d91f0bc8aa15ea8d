"""The documentation describes the code as it is."""

import ast
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



PACKAGE = REPO / "magicanimate_cli"


def _map_rows(title: str) -> list[tuple[str, str]]:
    """The rows of the architecture's tables under ``## title``: (first cell, the rest)."""
    section = (REPO / "docs" / "architecture.md").read_text().split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    return [(cells[0], "|".join(cells[1:])) for cells in rows]


def test_every_module_the_architecture_map_names_exists_and_every_module_is_named():
    named: set[Path] = set()
    for first, rest in _map_rows("Modules"):
        for name in re.findall(r"`([\w.]+/?)`", first):
            named.add(PACKAGE / name.rstrip("/"))
            if name.endswith("/"):  # a package's row: the modules its description names
                named.update(PACKAGE / name / module for module in re.findall(r"`(\w+\.py)`", rest))
    for first, _ in _map_rows("The animator"):  # its module table (the numerics table names classes)
        named.update(PACKAGE / "animate" / module for module in re.findall(r"^ `(\w+\.py)` $", first))
    missing = sorted(str(path.relative_to(REPO)) for path in named if not path.exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    as_a_whole = {path for path in named if path.is_dir() and not any(p.parent == path for p in named)}  # batch/, evaluate/
    unnamed = sorted(str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py")
                     if path not in named and path.parent not in as_a_whole and path.name != "__main__.py"
                     and not (path.name == "__init__.py" and (path.parent in named or path.parent == PACKAGE)))
    assert not unnamed, f"docs/architecture.md's module map lacks {unnamed}"


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What ``NAMESPACE.NAME`` may name in a module's or a class's body: functions, classes, assignments, imports."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name.split(".")[0], node) for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update((name.id, node) for name in ast.walk(target) if isinstance(name, ast.Name))
    return names


FILE_NAMES = {"py", "md", "json", "jsonl", "csv", "txt", "png", "jpg", "mp4", "gif", "webp", "webm", "mov", "mkv",
              "safetensors", "ckpt", "pkl", "pth", "pdparams", "sock", "lock", "yaml", "toml", "sbatch"}


def test_every_dotted_name_the_documents_give_exists():
    """``media.kept_sound``, ``files.commit``, ``charts.Detections``, ``AnimateConfig.validate`` in the architecture,
    the reliability table and the README: a module of the package (dotted from the package, or by its own name, as
    ``charts`` for ``densepose/charts.py``) and a name that module defines or imports; a class of the package and
    a name its body defines. Names of other libraries (``torch.compile``, ``os.replace``) are left alone."""
    modules: dict[str, list[Path]] = {}
    classes: dict[str, list[ast.ClassDef]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        for key in {".".join(parts), parts[-1]} if parts else ():
            modules.setdefault(key, []).append(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(node)
    wrong = []
    for doc in ("docs/architecture.md", "docs/reliability.md", "README.md"):
        for span in re.findall(r"`([^`\n]+)`", (REPO / doc).read_text()):
            for name in re.findall(r"(?<![\w./-])([A-Za-z_]\w*(?:\.\w+)+)(?![\w/-])", span):
                parts = name.split(".")
                if parts[-1] in FILE_NAMES or parts[-1] == "X":  # a file name, or `media.X` (any name)
                    continue
                if parts[0] in classes and len(parts) == 2:
                    found = any(parts[1] in _names(node.body) for node in classes[parts[0]])
                else:
                    n = next((n for n in range(len(parts) - 1, 0, -1) if ".".join(parts[:n]) in modules), None)
                    if n is None:
                        continue
                    found = any(parts[n] in _names(ast.parse(path.read_text()).body) for path in modules[".".join(parts[:n])])
                if not found:
                    wrong.append(f"{doc}: `{name}`")
    assert not wrong, f"names that the package does not define: {wrong}"


def test_the_detectron2_install_block_is_the_tools_own_with_a_torchvision_of_its_torch():
    # the pair named is the one tested (torch 2.14.1 + torchvision 0.29.1: the CPU wheel of torch
    # 2.13 has no working torchvision), so only the rule is checked, as matching_torchvision applies it
    from magicanimate_cli.densepose.estimator import install_commands

    section = (REPO / "docs" / "densepose.md").read_text().split("## Installing detectron2 and DensePose", 1)[1]
    block = section.split("```", 2)[1].splitlines()[1:]
    shown = [re.split(r"\s+#\s", line)[0].strip() for line in block if line.strip()]
    assert shown[1:] == install_commands()[1:]
    vision = re.fullmatch(r"pip install 'torchvision==0\.(\d+)\.\*'", shown[0])
    torch = re.search(r"#\s*for torch 2\.(\d+)", block[0])
    assert vision and torch and int(vision.group(1)) == int(torch.group(1)) + 15, block[0]
