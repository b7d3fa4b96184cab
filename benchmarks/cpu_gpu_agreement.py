"""Do the GPU's stored results agree with the CPU's? Image by image, from the grid's state files.

The robustness grid keeps every per-image result with the machine that computed it
(``computed_on``). Where a model has the same attack at the same eps stored twice, once from this
project's CPU and once from a GPU (with other batch sizes, so other random starts), this compares
them on the images both cover: how many images get the same verdict, and the paired bootstrap 95%
CI of (GPU - CPU) accuracy. Clean and FGSM have no randomness, so any disagreement there is
numerics (the GPU ran with cuDNN's TF32 convolutions); PGD's and Square's random starts differ
with the batch partition, so some disagreement is expected there.

    python benchmarks/cpu_gpu_agreement.py --config fashion_lite
writes benchmarks/results/cpu_gpu_agreement_<config>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cafe_core.evaluation.evaluate import normalise_state_keys
from cafe_core.evaluation.grid_rows import grid_models
from cafe_core.evaluation.grid_state import current_state_files
from cafe_core.evaluation.statistics import paired_bootstrap_ci
from cafe_core.io.checkpoints import read_card
from cafe_core.io.config import load_config
from cafe_core.io.reporting import markdown_table
from cafe_core.io.serialization import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent

#: Entries stored before per-column provenance was recorded were all computed on this project's
#: CPU machine (no GPU was lent before 2026-11-27); the state files say so explicitly since then.
UNLABELLED = "CPU (x86_64)"


def flatten(entry: dict[str, Any]) -> list[int]:
    """Per-image results of one state entry, its batches in order."""
    batches = entry["batches"]
    return [v for i in sorted(batches, key=int) for v in batches[i]]


def compare_state(state: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (attack, eps) stored both by a CPU and by a GPU (``"cuda"`` not in the label
    means CPU), on the leading images both have."""
    by_attack: dict[tuple[str, float], dict[str, list[int]]] = {}
    for key, entry in normalise_state_keys(state).items():
        if key == "sha256":
            continue
        name, eps, *_ = json.loads(key)
        machines = entry.get("computed_on") or [UNLABELLED]
        if len(machines) != 1:
            continue  # a mixed entry cannot be attributed
        kind = "gpu" if any(word in machines[0] for word in ("NVIDIA", "cuda", "GPU")) else "cpu"
        current = by_attack.setdefault((name, eps), {})
        values = flatten(entry)
        if len(values) > len(current.get(kind, [])):
            current[kind] = values
            current[kind + "_machine"] = machines[0]  # type: ignore[assignment]
    records = []
    for (name, eps), found in sorted(by_attack.items()):
        if "cpu" not in found or "gpu" not in found:
            continue
        n = min(len(found["cpu"]), len(found["gpu"]))
        cpu, gpu = found["cpu"][:n], found["gpu"][:n]
        low, high = paired_bootstrap_ci(gpu, cpu)
        records.append({"attack": name, "eps": eps, "n": n, "same_verdict": sum(a == b for a, b in zip(cpu, gpu)),
                        "cpu_acc": sum(cpu) / n, "gpu_acc": sum(gpu) / n, "ci95_gpu_minus_cpu": [low, high],
                        "cpu": found["cpu_machine"], "gpu": found["gpu_machine"]})
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fashion_lite")
    args = parser.parse_args()
    state_dir = ROOT / "benchmarks" / "results" / "state" / f"robustness_{args.config}"
    config = load_config(args.config)
    # The state of the current checkpoints only (a retrained row keeps its old results in a file of its own).
    shas = {m.label: read_card(m.path)["sha256"] for m in grid_models(ROOT / config["checkpoint_dir"])
            if m.path.is_file()}
    rows = []
    for label, path in sorted(current_state_files(state_dir, shas).items(), key=lambda item: item[1].name):
        for record in compare_state(json.loads(path.read_text())):
            rows.append({"model": label, **record})
    if not rows:
        raise SystemExit(f"no attack stored by both a CPU and a GPU under {state_dir}")
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        total = totals.setdefault(row["attack"], {"n": 0, "same_verdict": 0})
        total["n"] += row["n"]
        total["same_verdict"] += row["same_verdict"]
    result = {"config": args.config, "rows": rows, "totals": totals,
              "command": f"python benchmarks/cpu_gpu_agreement.py --config {args.config}",
              "hardware": "computed from stored per-image results; machines per row"}
    out = ROOT / "benchmarks" / "results" / f"cpu_gpu_agreement_{args.config}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    table = markdown_table(
        ["model", "attack", "eps", "n", "same verdict", "CPU %", "GPU %", "GPU - CPU, 95% CI (points)"],
        [[r["model"].removeprefix("defense_"), r["attack"], f"{r['eps']:g}", str(r["n"]), str(r["same_verdict"]),
          f"{100 * r['cpu_acc']:.2f}", f"{100 * r['gpu_acc']:.2f}",
          f"[{100 * r['ci95_gpu_minus_cpu'][0]:+.1f}, {100 * r['ci95_gpu_minus_cpu'][1]:+.1f}]"] for r in rows])
    summary = "; ".join(f"{a}: {t['same_verdict']:,} of {t['n']:,} images" for a, t in totals.items())
    machines = sorted({r["gpu"] for r in rows}) + sorted({r["cpu"] for r in rows})
    text = (f"Same images, same attack and eps, computed once on a CPU and once on a GPU ({' vs '.join(machines)}); "
            f"in batches of other sizes, so PGD's and Square's random starts differ too. "
            f"Same verdict: {summary}. Clean and FGSM are deterministic: a different verdict there is numerics "
            f"(TF32 convolutions on the GPU vs fp32 on the CPU).\n\n{table}")
    atomic_write_text(out.with_suffix(".md"), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
