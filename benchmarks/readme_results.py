"""Regenerate the README "Results" section from benchmarks/results/*.md (never typed by hand).

    python benchmarks/readme_results.py          # rewrite README.md in place
    python benchmarks/readme_results.py --check  # exit 1 if README.md is out of date

Each results file is written by the command recorded in its JSON twin; this script only
copies the markdown between the RESULTS markers, in the order of SECTIONS.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"

# (title, results stem) in README order; missing files are skipped.
SECTIONS = [
    ("Lite ADV backbone (Fashion-MNIST, eps 0.1)", "eval_fashion_lite_adv"),
    ("Causal analysis of the AMR-GMM estimator (Fashion-MNIST lite, PGD)", "causal_fashion_lite"),
    ("AMR-GMM step cost, lite backbone (CPU)", "amr_step_speed_lite_cpu"),
    ("AMR-GMM step cost, ResNet-18 at 32x32 (CPU, batch 16)", "amr_step_speed_resnet18_cpu"),
]


def section(title: str, stem: str) -> str | None:
    md, js = RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"
    if not md.is_file() or not js.is_file():
        return None
    meta = json.loads(js.read_text())
    parts = [f"### {title}", "", md.read_text().strip(), ""]
    figure = RESULTS / f"{stem}_fig3.png"
    if figure.is_file():
        parts += [f"![Fig. 3-style feature inversions]({figure.relative_to(ROOT).as_posix()})", ""]
    parts += [f"Command: `{meta.get('command', '?')}`  "]
    if meta.get("figure_command"):
        parts += [f"Figure: `{meta['figure_command']}`  "]
    parts += [f"Hardware: {meta.get('hardware', '?')}", ""]
    return "\n".join(parts)


def render(readme: str) -> str:
    body = "\n".join(s for s in (section(t, stem) for t, stem in SECTIONS) if s)
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    path = ROOT / "README.md"
    current = path.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md results are out of date: run python benchmarks/readme_results.py")
            return 1
        return 0
    path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
