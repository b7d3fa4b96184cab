"""Package metadata and repository hygiene: one list of pins, no sys.path edits, no machine paths."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def test_pyproject_reads_the_runtime_pins_and_mirrors_the_dev_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "cafe-lab"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert project["project"]["optional-dependencies"]["dev"] == requirement_lines(ROOT / "requirements-dev.txt")
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev and "-e ." in dev  # CI's install makes cafe_core importable


def test_no_sys_path_edits_in_benchmarks_or_tests():
    offenders = [str(path.relative_to(ROOT)) for folder in ("benchmarks", "tests") for path in (ROOT / folder).rglob("*.py")
                 if path != Path(__file__) and re.search(r"sys\.path\.(insert|append)", path.read_text())]
    assert offenders == []


def test_committed_results_and_cards_name_no_machine_path():
    pattern = re.compile(r"(^|[\s\"'=])(/(work|root|home|tmp|mnt|Users)/|[A-Za-z]:\\\\)")
    found = []
    for folder in ("benchmarks", "checkpoints"):
        for path in (ROOT / folder).rglob("*.json"):
            for value in strings(json.loads(path.read_text())):
                if pattern.search(value):
                    found.append(f"{path.relative_to(ROOT)}: {value}")
    assert found == []


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_a_benchmark_runs_as_a_script_from_the_repository_root():
    run = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


#: cafe_core's layers, top to bottom (docs/architecture.md): a module may import its own layer and
#: the layers before it, never one after it (a cycle between concepts).
LAYERS = ("registry", "distributed", "data", "models", "io", "attacks", "causal", "defenses", "evaluation",
          "training", "serving", "cli")


def imported_layers(path: Path) -> set[str]:
    """The cafe_core layers one file imports (relative or absolute, at the top or inside functions)."""
    import ast

    package = list(path.relative_to(ROOT).parent.parts)  # what a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] != "cafe_core":
                continue
            names = target[1:2] or [alias.name for alias in node.names]
            found.update(name for name in names if name in LAYERS)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("cafe_core.") and alias.name.split(".")[1] in LAYERS)
    return found


def test_every_layer_imports_only_itself_and_the_layers_before_it():
    assert sorted(LAYERS[:-1]) == sorted(p.stem if p.is_file() else p.name for p in (ROOT / "cafe_core").iterdir()
                                          if p.name not in ("__init__.py", "__main__.py", "__pycache__", "cli"))
    upward = []
    for path in sorted((ROOT / "cafe_core").rglob("*.py")):
        parts = path.relative_to(ROOT / "cafe_core").parts
        layer = parts[0] if len(parts) > 1 else path.stem
        if layer not in LAYERS:
            continue
        upward += [f"{path.relative_to(ROOT)} imports {other}" for other in sorted(imported_layers(path))
                   if LAYERS.index(other) > LAYERS.index(layer)]
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    # The check above must be able to fail: a data module importing serving is reported.
    fake_root = tmp_path
    module = fake_root / "cafe_core" / "data" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("from ..serving.handlers import AppContext\n\ndef f():\n    from cafe_core.training import stages\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert imported_layers(module) == {"serving", "training"}


def test_the_longest_first_list_names_test_modules_that_exist():
    from tests.conftest import LONGEST_FIRST

    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [m for m in LONGEST_FIRST if not (ROOT / m).is_file() or not Path(m).name.startswith("test_")] == []
