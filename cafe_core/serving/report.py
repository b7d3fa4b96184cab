"""The Explore comparison as a shareable report: a PNG panel and a JSON that reproduces it.

The JSON holds the exact model input (a lossless PNG, base64), every setting and seed, the
checkpoints' sha256 and the library versions, plus all numbers. ``python -m cafe_core analyze
--from-report report.json`` reruns the same analysis and says whether the numbers match.
"""
from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..causal.analysis import AMRBundle
from ..data.images import image_from_uint8
from ..io.checkpoints import CheckpointError
from ..io.provenance import library_versions
from ..io.serialization import atomic_write, atomic_write_text
from .compare import DefenseSet, compare_defenses
from .explore import ExploreResult, explore

REPORT_KIND = "cafe-lab-explore"
REPORT_VERSION = 1
PANEL_ORDER = (("clean", "Clean", "natural"), ("adversarial", "Adversarial", "adversarial"),
               ("perturbation", "Perturbation", None), ("inverted", "Causal inversion", "inverted"),
               ("feature_natural", "Inv: Natural", "natural"), ("feature_adversarial", "Inv: Adversarial", "adversarial"),
               ("feature_causal", "Inv: Causal", "causal"), ("feature_counterfactual", "Inv: Counterfact.", "counterfactual"))


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_input(report: dict[str, Any]) -> np.ndarray:
    """The (H, W, 3) uint8 model input stored in a report."""
    data = base64.b64decode(report["input_png_base64"], validate=True)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def run_comparison(bundle: AMRBundle | torch.nn.Module, defenses: DefenseSet | None, image: torch.Tensor,
                   true_label: int | None, class_names: Sequence[str],
                   **settings: Any) -> tuple[ExploreResult, list[dict[str, Any]]]:
    """Everything the Explore view shows: :func:`explore` on the AMR-GMM bundle (or a bare
    backbone), then every network of ``defenses`` under the same attack, radius, steps, seed and target."""
    result = explore(bundle, image, true_label, tuple(class_names), **settings)
    rows: list[dict[str, Any]] = []
    if defenses is not None and len(defenses):
        label = true_label if true_label is not None else result.predictions["natural"].label
        s = result.settings
        rows = compare_defenses(defenses, image, label, true_label, attack=s["attack"], eps=s["eps"],
                                steps=s["steps"], seed=s["seed"], target=s["target"])
    return result, rows


RERUN_KEYS = ("attack", "eps", "steps", "seed", "target", "eps_inv", "inversion_steps", "feature_steps")


def rerun_report(report: dict[str, Any], bundle: AMRBundle, defenses: DefenseSet | None,
                 class_names: Sequence[str], channels: int) -> tuple[dict[str, Any], list[str]]:
    """Run a report's analysis again; returns the new report and its differences from the old.

    Raises ``CheckpointError`` if the AMR-GMM checkpoint is not the one the report was made with.
    """
    settings = report["settings"]
    if settings.get("network", "adv") != "adv":
        raise ValueError(f"this report attacked the {settings['network']} network; only reports of the robust (adv) "
                         "network can be rerun from the command line")
    if settings.get("amr_sha256") and settings["amr_sha256"] != bundle.card.get("sha256"):
        raise CheckpointError("the report was made with another AMR-GMM checkpoint "
                              f"(sha256 {settings['amr_sha256'][:12]}..., loaded {str(bundle.card.get('sha256'))[:12]}...)")
    kwargs = {k: settings[k] for k in RERUN_KEYS if k in settings}
    result, rows = run_comparison(bundle, defenses if report.get("defenses") else None,
                                  image_from_uint8(decode_input(report), channels), settings.get("true_label"), class_names, **kwargs)
    new = build_report(result, rows, report.get("checkpoints"))
    return new, compare_numbers(report, new)


def build_report(result: ExploreResult, defenses: Sequence[dict[str, Any]] = (),
                 checkpoints: str | None = None) -> dict[str, Any]:
    """Plain-data report of one Explore run (settings, numbers, defense table, the input image)."""
    return {"kind": REPORT_KIND, "version": REPORT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checkpoints": checkpoints, "settings": result.settings, "numbers": result.to_json(),
            "defenses": list(defenses), "input_png_base64": _png_base64(result.images["clean"]),
            "versions": library_versions()}


def read_report(path: str | Path) -> dict[str, Any]:
    """Load and check a report file (clear ValueError on anything else)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON report ({err})") from None
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise ValueError(f"{path}: not a CAFE Lab explore report")
    if report.get("version") != REPORT_VERSION:
        raise ValueError(f"{path}: report version {report.get('version')} not supported (expected {REPORT_VERSION})")
    for key in ("settings", "numbers", "input_png_base64"):
        if key not in report:
            raise ValueError(f"{path}: report lacks {key!r}")
    return report


def compare_numbers(old: dict[str, Any], new: dict[str, Any], tolerance: float = 1e-4) -> list[str]:
    """Differences between two reports' numbers (labels exactly, floats within ``tolerance``)."""
    differences = []
    for name, view in old["numbers"]["predictions"].items():
        other = new["numbers"]["predictions"].get(name)
        if other is None or other["label"] != view["label"]:
            differences.append(f"{name}: label {view['label']} -> {None if other is None else other['label']}")
        elif not np.allclose(view["probabilities"], other["probabilities"], atol=tolerance):
            differences.append(f"{name}: probabilities differ by more than {tolerance}")
    for key, value in old["numbers"]["kl_x1000"].items():
        other = new["numbers"]["kl_x1000"].get(key)
        if other is None or not math.isclose(value, other, rel_tol=1e-3, abs_tol=tolerance * 1000):
            differences.append(f"KL {key}: {value:.4f} -> {other}")
    old_rows = {(r["defense"], str(r["cafe"])): r for r in old.get("defenses", [])}
    for row in new.get("defenses", []):
        before = old_rows.get((row["defense"], str(row["cafe"])))
        if before is not None and before["adversarial_label"] != row["adversarial_label"]:
            differences.append(f"{row['defense']} cafe={row['cafe']}: adversarial label "
                               f"{before['adversarial_label']} -> {row['adversarial_label']}")
    return differences


def _caption(result: ExploreResult, prediction: str | None, title: str) -> str:
    if prediction is None:
        return f"{title} x{result.perturbation_scale:.1f}"
    view = result.predictions[prediction]
    mark = "" if view.correct is None else (" ok" if view.correct else " WRONG")
    return f"{title}: {view.class_name[:10]} {100 * view.confidence:.0f}%{mark}"


def report_png(result: ExploreResult, defenses: Sequence[dict[str, Any]] = (), scale: int = 5) -> bytes:
    """A PNG panel: the eight pictures with their predictions, the KL line and the defense table."""
    tiles = [(Image.fromarray(result.images[key]).resize(
        (result.images[key].shape[1] * scale, result.images[key].shape[0] * scale), Image.NEAREST),
        _caption(result, pred, title)) for key, title, pred in PANEL_ORDER if key in result.images]
    tw, th = tiles[0][0].size
    cell_w, cell_h = max(tw, 190), th + 18
    cols = 4
    rows = math.ceil(len(tiles) / cols)
    s = result.settings
    lines = [f"{s.get('network', 'adv')} network, {s['attack']} eps={255 * s['eps']:.1f}/255 steps={s['steps']} "
             f"seed={s['seed']} target={s['target']}" + (f" eps_inv={s['eps_inv']:.3f}" if "eps_inv" in s else ""),
             "KL x1000 to the causal prediction: " + ", ".join(f"{k} {v:.2f}" for k, v in result.kl_x1000.items())
             if result.has_causal else "no causal estimator for this network: no causal panels"]
    names = result.class_names
    for row in defenses:
        lines.append(f"{row.get('name', row['defense'])[:32]:32s} clean {names[row['clean_label']][:12]:12s} "
                     f"{100 * row['clean_confidence']:3.0f}%   attacked {names[row['adversarial_label']][:12]:12s} "
                     f"{100 * row['adversarial_confidence']:3.0f}%")
    height = rows * cell_h + 14 * len(lines) + 16
    canvas = Image.new("RGB", (cols * cell_w, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, caption) in enumerate(tiles):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        canvas.paste(tile, (x + (cell_w - tw) // 2, y))
        draw.text((x + 2, y + th + 3), caption, fill="black")
    y = rows * cell_h + 8
    for line in lines:
        draw.text((4, y), line, fill="black")
        y += 14
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def write_report(report: dict[str, Any], png: bytes, folder: str | Path, stem: str = "cafe_lab_report") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` atomically into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / f"{stem}.json", folder / f"{stem}.png"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write(png_path, lambda tmp: Path(tmp).write_bytes(png))
    return json_path, png_path
