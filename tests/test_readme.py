"""The README's set-up commands, CI, headline numbers and generated results stay in step."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The bash blocks of the README's set-up sections, in order: command (1) sits near the top for
    a first-time visitor, command (2) (the whole test suite) further down, each under a heading
    that starts with "Set-up"."""
    text = (ROOT / "README.md").read_text()
    sections = [part.split("\n", 1)[1] for part in text.split("\n## ")[1:] if part.startswith("Set-up")]
    return [block.strip() for setup in sections for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


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
    current = (ROOT / "docs" / "results.md").read_text()
    assert module.render(current) == current, "docs/results.md: run python benchmarks/readme_results.py"
    for folder in (ROOT / "checkpoints").iterdir():
        if folder.is_dir() and any(folder.glob("*.safetensors")):
            assert (folder / "README.md").read_text() == module.checkpoint_table(folder), \
                f"{folder.name}/README.md: run python benchmarks/readme_results.py"


def test_readme_is_short_and_opens_with_the_setup_command():
    """A visitor reads what the lab shows, sees the screenshot and the set-up command on the first
    screen; everything else lives in docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    body = text.split("\n---\n", 1)[1]  # after the Hugging Face Space front matter
    assert body.index("arxiv.org/abs/2303.01052") < body.index("assets/screenshots/explore.png") \
        < body.index(readme_commands()[0]) < body.index("## Four tabs") < body.index(readme_commands()[1])


def test_readme_and_docs_link_to_files_that_exist():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_readme_headline_quotes_the_grid():
    """The headline finding is the grid's own numbers: the claim per defense and ADV-CAFE minus
    the h = 0 control, as benchmarks/results/robustness_fashion_lite.json has them."""
    text = " ".join((ROOT / "README.md").read_text().split())
    grid = json.loads((ROOT / "benchmarks" / "results" / "robustness_fashion_lite.json").read_text())
    claim = grid["claim"]
    assert f"holds for {claim['holds_for']} of {claim['of']} defenses" in text

    def points(value: float) -> str:
        return f"{100 * value:+.2f}"

    for defense, row in claim["per_defense"].items():
        low, high = row["ci95"]
        quoted = f"{defense.upper()} {points(row['gain'])} [{points(low)}, {points(high)}]"
        assert quoted in text, quoted
    for column in ("pgd", "autoattack"):
        row = grid["adv_cafe_minus_control"][column]
        low, high = row["ci95"]
        quoted = f"{points(row['delta'])} [{points(low)}, {points(high)}]"
        assert quoted in text, quoted
