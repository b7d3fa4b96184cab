"""The app's example gallery: test images picked by a rule written before looking.

The rule (``RULE``) asks, per class, for an image that shows the paper's phenomenon at the app's
default settings: the attack fools the robust network and the undefended one, the Causal
prediction is right and the Counterfactual is wrong. ``select_gallery`` scans the test set in
order and takes the first image of each class that meets it, relaxing it in a fixed, recorded
order when no image of a class does. ``assets/examples/manifest.json`` records the outcome of
every example, and tests/serving/test_gallery.py reruns the app's analysis to check it still holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..data.images import image_to_uint8
from ..io.provenance import REPO_ROOT
from ..io.serialization import atomic_write, atomic_write_text
from .explore import explore

RULE = ("For each class, in test-set order, the first test image that the robust (ADV) network classifies "
        "correctly, that the set's out-of-distribution detector does not flag (a flagged first screen would "
        "warn that the picture is unlike the training data), and that, under the app's default attack on it (settings below), (a) the ADV network "
        "misclassifies, (b) the undefended network misclassifies when attacked the same way on its own gradients, "
        "(c) the Causal prediction c(F_n + h(Z)) gets right and (d) the Counterfactual prediction c(F_n + g(Z)) "
        "gets wrong. If no image among the first {scan} of a class meets (a)-(d), the first that meets (a)-(c), "
        "then (a)-(b), then (a); 'rule_met' records which.")
# Conditions of RULE, strictest first; the fallback drops them from the end.
CONDITIONS = ("adv_fooled", "standard_fooled", "causal_right", "counterfactual_wrong")
SCAN_PER_CLASS = 300


@dataclass(frozen=True)
class Outcome:
    """What the app's default analysis says about one image (labels are class indices)."""

    predictions: dict[str, int]
    standard_adversarial: int | None
    label: int
    ood_flagged: bool = False

    @property
    def met(self) -> dict[str, bool]:
        p, y = self.predictions, self.label
        return {"clean_right": p["natural"] == y and not self.ood_flagged, "adv_fooled": p["adversarial"] != y,
                "standard_fooled": self.standard_adversarial is not None and self.standard_adversarial != y,
                "causal_right": p["causal"] == y, "counterfactual_wrong": p["counterfactual"] != y}


def outcome(lab: Any, image: torch.Tensor, label: int, settings: dict[str, Any]) -> Outcome:
    """The default analysis of ``image`` (1, C, H, W): the ADV network's four predictions under
    the attack, and the undefended network's prediction under the same attack on itself."""
    result = explore(lab.bundle, image, label, lab.class_names, **settings)
    standard = None
    if "standard" in lab.backbones:
        attacked = explore(lab.backbones["standard"].model, image, label, lab.class_names,
                           **{**settings, "feature_steps": 0}, network="standard")
        standard = attacked.predictions["adversarial"].label
    keys = ("natural", "adversarial", "causal", "counterfactual")
    ood = lab.ood_check(image)
    return Outcome({k: result.predictions[k].label for k in keys}, standard, label, bool(ood and ood["flagged"]))


def select_gallery(lab: Any, images: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any],
                   scan: int = SCAN_PER_CLASS, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One example per class by ``RULE``: a list of manifest entries (without file names)."""
    chosen = []
    for cls in range(len(lab.class_names)):
        indices = (labels == cls).nonzero().flatten()[:scan].tolist()
        best: tuple[int, int, Outcome] | None = None  # (conditions met, test index, outcome)
        for index in indices:
            result = outcome(lab, images[index:index + 1], cls, settings)
            met = result.met
            if not met["clean_right"]:
                continue
            depth = 0
            while depth < len(CONDITIONS) and met[CONDITIONS[depth]]:
                depth += 1
            if best is None or depth > best[0]:
                best = (depth, index, result)
            if depth == len(CONDITIONS):
                break
        if best is None or best[0] == 0:
            raise RuntimeError(f"no test image of class {lab.class_names[cls]} is fooled at these settings")
        depth, index, result = best
        log(f"{lab.class_names[cls]}: test image {index} meets {', '.join(CONDITIONS[:depth])}")
        chosen.append(entry(result, index, lab.class_names, CONDITIONS[:depth]))
    return chosen


def entry(result: Outcome, test_index: int, class_names: tuple[str, ...], rule_met: tuple[str, ...]) -> dict[str, Any]:
    """A manifest entry for one example (``file`` is added when the image is written)."""
    y = result.label
    return {"label": y, "class_name": class_names[y], "test_index": test_index, "predictions": result.predictions,
            "prediction_names": {k: class_names[v] for k, v in result.predictions.items()},
            "adversarial_correct": result.predictions["adversarial"] == y,
            "causal_correct": result.predictions["causal"] == y,
            "counterfactual_correct": result.predictions["counterfactual"] == y,
            "ood_flagged": result.ood_flagged,
            "standard_adversarial_correct": None if result.standard_adversarial is None
            else result.standard_adversarial == y,
            "rule_met": list(rule_met)}


def example_file_name(label: int, class_name: str, test_index: int) -> str:
    """``<label>_<class-name>_test<index>.png`` (the app reads the label from the name)."""
    slug = "".join(c if c.isalnum() else "-" for c in class_name.lower()).strip("-")
    return f"{label}_{slug}_test{test_index}.png"


def write_gallery(folder: str | Path, images: torch.Tensor, examples: list[dict[str, Any]],
                  manifest: dict[str, Any]) -> Path:
    """Write each example as an 8-bit PNG and ``manifest.json`` into ``folder`` (old PNGs removed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for example in examples:
        name = example_file_name(example["label"], example["class_name"], example["test_index"])
        pixels = image_to_uint8(images[example["test_index"]])
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 or
                                  np.array_equal(pixels[:, :, 0], pixels[:, :, 1]) else pixels)
        atomic_write(folder / name, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
        example["file"] = name
    manifest = {**manifest, "examples": examples}
    path = folder / "manifest.json"
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """``manifest.json`` of a gallery folder, or None when there is none."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def lesson_example(examples: list[Path], manifest: dict[str, Any] | None) -> Path | None:
    """The lesson's image: the first example whose manifest entry says the attack fools the robust
    network, the Causal prediction is right and the Counterfactual is wrong; else the first example."""
    if not examples:
        return None
    folder = examples[0].parent
    for item in (manifest or {"examples": []})["examples"]:
        if (not item["adversarial_correct"] and item["causal_correct"] and not item["counterfactual_correct"]
                and (folder / item["file"]).is_file()):
            return folder / item["file"]
    return examples[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m cafe_core.serving.gallery``: pick the gallery from the test set and write it."""
    import argparse

    from ..data.datasets import load_split
    from ..io.provenance import command_line, provenance
    from .lab import Lab
    from .settings import explore_defaults

    parser = argparse.ArgumentParser(prog="python -m cafe_core.serving.gallery", description=main.__doc__)
    parser.add_argument("--checkpoints", default=None, help="checkpoint set (default: the shipped one)")
    parser.add_argument("--out", default=str(REPO_ROOT / "assets" / "examples"))
    parser.add_argument("--scan", type=int, default=SCAN_PER_CLASS, help="test images scanned per class")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = Lab(args.checkpoints)
    if lab.bundle is None:
        raise SystemExit(f"{lab.folder} has no AMR-GMM checkpoint: the rule needs the Causal prediction")
    card = lab.adv.card
    cfg = card.get("config", {})
    test = load_split(card["dataset"], "test", args.data_root, cfg.get("n_val", 5000), cfg.get("seed", 0),
                      download=False)
    images, labels = test.images.float() / 255, test.labels
    settings = explore_defaults(card["eps"])
    examples = select_gallery(lab, images, labels, settings, args.scan)
    made = provenance(command_line("-m cafe_core.serving.gallery", argv))
    manifest = {"rule": RULE.format(scan=args.scan), "settings": {**settings, "network": "adv"},
                "backbone_sha256": card["sha256"], "amr_sha256": lab.bundle.card["sha256"],
                "ood_sha256": lab.ood.card.get("sha256") if lab.ood is not None else None,
                "standard_sha256": lab.backbones["standard"].card["sha256"] if "standard" in lab.backbones else None,
                "dataset": card["dataset"], "split": "test", **made}
    path = write_gallery(args.out, images, examples, manifest)
    fooled = sum(not e["adversarial_correct"] for e in examples)
    print(f"wrote {path}: ADV fooled on {fooled} of {len(examples)} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
