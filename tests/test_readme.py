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


def test_requirements_admit_the_installed_torch_wheels():
    """``pip install -r requirements.txt`` keeps the torch and torchvision this machine runs (whatever
    their versions), instead of replacing them with other wheels; and the two pins are real ranges."""
    import importlib.metadata as md

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    reqs = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "torchvision"):
        pin = SpecifierSet(re.search(rf"^{package}([<>=,.\d]+)$", reqs, re.M).group(1))
        installed = Version(md.version(package)).public  # 2.14.1+cu130 -> 2.14.1
        assert installed in pin, f"requirements.txt pins {package}{pin}, this machine has {installed}"
        assert any(s.operator in (">=", ">", "~=", "==") for s in pin), f"{package}: no lower bound in {pin}"


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
