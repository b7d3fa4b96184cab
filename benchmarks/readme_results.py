"""Regenerate docs/results.md and checkpoints/<set>/README.md from the result files (never typed by hand).

    python benchmarks/readme_results.py          # rewrite docs/results.md and the checkpoint tables
    python benchmarks/readme_results.py --check  # exit 1 if any of them is out of date

Each results file is written by the command recorded in its JSON twin; this script only
copies the markdown between the RESULTS markers of docs/results.md, in the order of SECTIONS,
so a number in the docs can always be traced to the file and command that produced it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"

# (title, results stem) in the order of docs/results.md; missing files are skipped, so a result
# appears once its benchmark has written it.
SECTIONS = [
    ("Robustness grid: five defenses, baseline vs CAFE vs the h = 0 control (Fashion-MNIST lite)",
     "robustness_fashion_lite"),
    ("The same results from the CPU and from the GPU, image by image", "cpu_gpu_agreement_fashion_lite"),
    ("Is the grid's AutoAttack budget strong enough? 10 vs 100 iterations, image by image",
     "autoattack_budget_fashion_lite"),
    ("What was tried: ADV-CAFE variants (weight of the CAFE term, inversion steps, eps_inv)",
     "cafe_ablation_fashion_lite"),
    ("AutoAttack with Square's queries through the compiled model (CPU)", "fast_queries_fashion_lite"),
    ("Lite ADV backbone (Fashion-MNIST, eps 0.1)", "eval_fashion_lite_adv"),
    ("Training step cost on one H100 and time per stage of the CIFAR-10 ResNet-18 recipe",
     "gpu_throughput_cuda_NVIDIA_H100_80GB_HBM3"),
    ("Causal analysis of the AMR-GMM estimator (Fashion-MNIST lite, PGD)", "causal_fashion_lite"),
    ("Feature inversion quality: app vs CLI settings, robust vs undefended network", "inversion_quality"),
    ("Out-of-distribution detector", "ood_fashion_lite"),
    ("AMR-GMM step cost, lite backbone (CPU)", "amr_step_speed_lite_cpu"),
    ("AMR-GMM step cost, ResNet-18 at 32x32 (CPU, batch 16)", "amr_step_speed_resnet18_cpu"),
    ("Defense training step cost, lite backbone (CPU)", "defense_step_speed_lite_cpu"),
    ("App latency (full Explore analysis through the API)", "app_latency"),
    ("Load test (concurrent sessions)", "load"),
    ("Classroom load test (30 students, one lesson)", "load_classroom"),
    ("Memory of one analysis worker: spawned the app's way vs re-running app.py", "worker_memory"),
]
CHECKPOINTS = ROOT / "checkpoints"


def section(title: str, stem: str, doc_dir: Path = DOC.parent) -> str | None:
    """One result as markdown; figure links are relative to ``doc_dir`` (the folder of the page)."""
    md, js = RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"
    if not md.is_file() or not js.is_file():
        return None
    meta = json.loads(js.read_text())
    text = md.read_text().strip()
    if text.startswith("# "):  # the file's own title; the section's title replaces it
        text = text.split("\n", 1)[1].strip() if "\n" in text else ""
    parts = [f"### {title}", "", text, ""]
    for suffix, alt in (("_fig3.png", "Fig. 3-style feature inversions"), ("_curves.png", "Robust accuracy vs eps")):
        figure = RESULTS / f"{stem}{suffix}"
        if figure.is_file():
            parts += [f"![{alt}]({Path(os.path.relpath(figure, doc_dir)).as_posix()})", ""]
    if "\nCommand: `" in f"\n{text}":  # the file names its command and machine itself
        return "\n".join(parts)
    parts += [f"Command: `{meta.get('command', '?')}`  "]
    if meta.get("figure_command"):
        parts += [f"Figure: `{meta['figure_command']}`  "]
    if meta.get("computed_on"):  # results from several machines: the markdown names them per column
        parts += [f"Hardware: per column, as \"Computed on\" says (assembled on {meta.get('hardware', '?')})", ""]
    else:
        parts += [f"Hardware: {meta.get('hardware', '?')}", ""]
    return "\n".join(parts)


def render(page: str) -> str:
    """``page`` (the text of docs/results.md) with the part between the markers regenerated."""
    body = "\n".join(s for s in (section(t, stem) for t, stem in SECTIONS) if s)
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def checkpoint_table(folder: Path) -> str:
    """checkpoints/<set>/README.md body: one row per card (never typed by hand)."""
    rows = []
    for card_path in sorted(folder.glob("*.json")):
        card = json.loads(card_path.read_text())
        if "sha256" not in card:
            continue
        metrics, cfg = card.get("metrics", {}), card.get("config", {})
        weights = folder / card.get("weights", card_path.with_suffix(".safetensors").name)
        size = weights.stat().st_size / 2**20 if weights.is_file() else float("nan")
        robust = metrics.get("val_robust_acc", metrics.get("val_causal_acc"))
        seconds = sum(h.get("seconds", 0) for h in card.get("history", []))
        what = card["stage"] + (f" {cfg.get('defense')}" if cfg.get("defense") else "") + \
            (f" +{cfg['cafe']}" if cfg.get("cafe") else "")
        rows.append([f"`{weights.name}`", what, str(card.get("epoch_selected", "-")),
                     f"{100 * metrics['val_clean_acc']:.2f}" if "val_clean_acc" in metrics else "-",
                     f"{100 * robust:.2f}" if robust is not None else "-", f"{seconds:.0f}", f"{size:.2f}",
                     card["sha256"][:12], Path(card["parent"]["path"]).name if card.get("parent") else "-"])
    header = ["file", "stage", "epoch", "val clean %", "val robust % (AMR: causal %)", "train s", "MB", "sha256",
              "parent"]
    from cafe_core.io.reporting import markdown_table

    total = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
    return (f"# Checkpoints: {folder.name}\n\nGenerated from the cards by `python benchmarks/readme_results.py`; "
            "each card (.json) records the command, config, metrics per epoch, hardware and library versions.\n"
            "Validation: 5,000 training images held out; robust = PGD-10 on the first 1,000 of them.\n\n"
            + markdown_table(header, rows) + f"\n\nTotal: {total:.1f} MB.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    outputs = {DOC: render(DOC.read_text())}
    for folder in sorted(p for p in CHECKPOINTS.iterdir() if p.is_dir() and any(p.glob("*.safetensors"))):
        outputs[folder / "README.md"] = checkpoint_table(folder)
    stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date: run python benchmarks/readme_results.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(outputs[p])
    return 0


if __name__ == "__main__":
    sys.exit(main())
