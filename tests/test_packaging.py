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
