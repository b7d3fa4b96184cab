"""What was tried before concluding about CAFE: ADV-CAFE variants, one knob changed at a time.

Each variant is the grid's ADV-CAFE recipe (``[stages.defense]`` of the config: same ADV parent,
same frozen AMR-GMM h, same images, seed and budget, selected on validation) with one of the
knobs method.md leaves open changed: the inversion radius eps_inv, the causal inversion steps,
or the weight of the CAFE term. Every variant is evaluated exactly like the grid's fast phase
(clean and FGSM on all test images, PGD-30 on the first 2,000, same seed) and compared, image
by image (paired bootstrap 95% CI), with the grid's ADV baseline and ADV-CAFE, whose per-image
results are read from the grid's state. Nothing is selected on the test set: every variant
trained is reported.

    python benchmarks/cafe_ablation.py --config fashion_lite --threads 2

Writes benchmarks/results/cafe_ablation_<config>.json + .md; checkpoints go to
<checkpoint_dir>/ablation/ (a finished variant is not retrained; an interrupted one resumes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from cafe_core.data.datasets import load_split
from cafe_core.defenses.cafe_mode import CafeMode
from cafe_core.evaluation.grid import RobustnessGrid
from cafe_core.evaluation.grid_markdown import verdict
from cafe_core.evaluation.grid_settings import GridSettings
from cafe_core.evaluation.statistics import paired_difference
from cafe_core.io.checkpoints import load_backbone, read_card
from cafe_core.io.config import load_config
from cafe_core.io.provenance import command_line, provenance
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text
from cafe_core.training.stages import run_stage

ROOT = Path(__file__).resolve().parent.parent
ABLATION = "benchmarks/cafe_ablation.py"

#: name -> overrides of the grid recipe (the grid's ADV-CAFE: eps_inv 0.05, 2 steps, weight 1).
VARIANTS: dict[str, dict[str, Any]] = {
    "cafe_weight=5": {"cafe_weight": 5.0},
    "inversion_steps=5": {"inversion_steps": 5},
    "eps_inv=0.1": {"eps_inv": 0.1},
}
COLUMNS = ("clean", "fgsm", "pgd")


def slug(name: str) -> str:
    return name.replace("=", "-").replace(".", "p")


def train_variant(config_name: str, name: str, changes: dict[str, Any], folder: Path, device: str,
                  progress: bool) -> Path:
    """The variant's checkpoint: trained now unless a finished one with these settings exists."""
    out = folder / f"defense_adv-cafe_{slug(name)}.safetensors"
    if out.is_file():
        card = read_card(out)
        if all(card["config"].get(k) == v for k, v in changes.items()):
            return out
    config = load_config(config_name, [f"stages.defense.{k}={v}" for k, v in changes.items()])
    folder.mkdir(parents=True, exist_ok=True)
    run_stage(config, "defense", out=out, device=device, progress=progress, defense="adv", cafe=CafeMode.CAFE,
              command=command_line(ABLATION, ["--config", config_name, f"({name})"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_lite")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    parser.add_argument("--pgd-images", type=int, default=2000, help="as the grid's fast phase")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    config = load_config(args.config)
    folder = ROOT / config["checkpoint_dir"]
    results_dir = ROOT / "benchmarks" / "results"
    test = load_split(config["dataset"], "test", None, config["n_val"], config["seed"], download=False)
    limits = {"pgd": args.pgd_images, "square": 200}
    grid_state = results_dir / "state" / f"robustness_{config['name']}"
    settings = GridSettings.from_recipe(limits=limits)
    reference = RobustnessGrid(test, config["eps"], settings, state_dir=grid_state, device=args.device)
    own = RobustnessGrid(test, config["eps"], settings, device=args.device,
                         state_dir=results_dir / "state" / f"cafe_ablation_{config['name']}")

    def read_grid(label: str) -> dict[str, Any]:
        model, card = load_backbone(folder / f"{label}.safetensors", device=args.device)
        return reference.evaluate_model(model, card["sha256"], label, phases=())  # read only

    baseline, grid_cafe, control = (read_grid(x) for x in ("defense_adv", "defense_adv-cafe", "defense_adv-control-h0"))
    started = time.perf_counter()
    rows = []
    # The chosen variants are trained (or resumed); the others appear if an earlier run trained them.
    for name in VARIANTS:
        if name in chosen:
            path = train_variant(args.config, name, VARIANTS[name], folder / "ablation", args.device, not args.quiet)
        else:
            path = folder / "ablation" / f"defense_adv-cafe_{slug(name)}.safetensors"
            if not path.is_file():
                continue
        model, card = load_backbone(path, device=args.device)
        r = own.evaluate_model(model, card["sha256"], path.stem, phases=("fast",))
        rows.append({"variant": name, "changes": VARIANTS[name], "checkpoint": str(path.relative_to(ROOT)),
                     "sha256": card["sha256"], "train_seconds": card.get("train_seconds"),
                     "val": {k: card["metrics"].get(k) for k in ("val_clean_acc", "val_robust_acc")},
                     **{c: r["accuracy"].get(c) for c in COLUMNS},
                     "n": {c: r["n_images"].get(c) for c in COLUMNS},
                     "vs_baseline": paired_difference(r, baseline), "vs_adv_cafe": paired_difference(r, grid_cafe),
                     "vs_control_h0": paired_difference(r, control)})
        print(f"{name}: " + ", ".join(f"{c} {100 * rows[-1][c]:.2f}" for c in COLUMNS if rows[-1][c] is not None),
              flush=True)
    reference_rows = {label: {c: r["accuracy"].get(c) for c in COLUMNS}
                      for label, r in (("adv baseline", baseline), ("adv-cafe (grid)", grid_cafe),
                                       ("adv control h=0", control))}
    result = {"config": config["name"], "eps": config["eps"], "seed": 0, "columns": list(COLUMNS),
              "grid_recipe": {k: config["stages"]["defense"].get(k) for k in ("inversion_steps", "epochs", "steps")}
              | {"eps_inv": config.get("analysis", {}).get("eps_inv"), "cafe_weight": 1.0},
              "reference": reference_rows, "rows": rows, "bootstrap": {"resamples": 2000, "level": 0.95, "paired": True},
              "wall_seconds_this_run": round(time.perf_counter() - started, 1),
              # The rows accumulate over runs: the command that reproduces all of them, and this run's own.
              **provenance(command_line(ABLATION, ["--config", args.config, "--threads", "2", "--variants",
                                                   ",".join(r["variant"] for r in rows)])),
              "last_run_command": command_line()}
    out = results_dir / f"cafe_ablation_{config['name']}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), ablation_markdown(result) + "\n")
    print(ablation_markdown(result))


def ablation_markdown(result: dict[str, Any]) -> str:
    """The variants next to the grid's ADV baseline, ADV-CAFE and h = 0 control, with paired CIs."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    def diff(d: dict, column: str) -> str:
        c = d.get(column)
        return "-" if c is None else f"{100 * c['delta']:+.2f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]"

    body = [[label, *[pct(r[c]) for c in result["columns"]], "", "", ""] for label, r in result["reference"].items()]
    body += [[f"adv-cafe, {r['variant']}", *[pct(r[c]) for c in result["columns"]], diff(r["vs_baseline"], "pgd"),
              diff(r["vs_adv_cafe"], "pgd"), diff(r.get("vs_control_h0", {}), "pgd")] for r in result["rows"]]
    table = markdown_table(["model", *[c.upper() if c != "pgd" else "PGD-30" for c in result["columns"]],
                            "PGD - baseline [95% CI]", "PGD - grid ADV-CAFE [95% CI]", "PGD - control h=0 [95% CI]"],
                           body)
    lines = [f"CAFE ablation on {result['config']} (eps {result['eps']}), accuracy % "
             f"(clean/FGSM on {result['rows'][0]['n']['clean'] if result['rows'] else '?'} test images, "
             f"PGD-30 on {result['rows'][0]['n']['pgd'] if result['rows'] else '?'}), {result['hardware']}.",
             "", table, ""]
    for r in result["rows"]:
        ci = r["vs_baseline"].get("pgd", {}).get("ci95")
        if ci:
            lines.append(f"- {r['variant']} vs the ADV baseline, PGD-30: "
                         + verdict(ci, f"adv-cafe ({r['variant']})", "the baseline"))
        control = r.get("vs_control_h0", {}).get("pgd", {}).get("ci95")
        if control:
            lines.append(f"- {r['variant']} vs the h = 0 control, PGD-30: "
                         + verdict(control, f"adv-cafe ({r['variant']})", "the control"))
    if len(result["rows"]) > 1:
        lines.append(f"- {len(result['rows'])} variants are compared with the same baseline, each at 95%: one CI "
                     "above zero by chance is not unlikely; the comparison with the h = 0 control says whether the "
                     "causal estimator, rather than the extra term, explains a gain.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
