"""The README's set-up commands and CI stay in step."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "python app.py" in commands[0] and "requirements.txt" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_readme_command_two_verbatim():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert readme_commands()[1] in ci_lines


def test_requirements_admit_the_local_torch_wheels():
    reqs = (ROOT / "requirements.txt").read_text()
    torch_pin = re.search(r"^torch([<>=,.\d]+)$", reqs, re.M).group(1)
    vision_pin = re.search(r"^torchvision([<>=,.\d]+)$", reqs, re.M).group(1)
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(torch_pin)
    assert "0.29.1" in SpecifierSet(vision_pin)


def test_readme_results_match_the_result_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "README.md").read_text()
    assert module.render(current) == current, "run python benchmarks/readme_results.py"
    for folder in (ROOT / "checkpoints").iterdir():
        if folder.is_dir() and any(folder.glob("*.safetensors")):
            assert (folder / "README.md").read_text() == module.checkpoint_table(folder), \
                f"{folder.name}/README.md: run python benchmarks/readme_results.py"
