"""One checkpoint set loaded for serving: what the app calls, as plain data.

The app (and the lesson, the report and the tests) ask a ``Lab`` for an Explore comparison,
attributions, the robustness results of the set and a quick evaluation; the Lab owns the loaded
models. Nothing here knows about gradio.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..causal.analysis import AMRBundle, load_amr
from ..causal.attribution import Attributions, attribute
from ..data.images import PreparedImage, image_from_uint8, prepare_image
from ..evaluation.ood import OODDetector, load_ood
from ..io.checkpoints import CheckpointError
from ..io.provenance import REPO_ROOT
from .compare import DefenseSet
from .explore import ExploreResult
from .predict import DEFAULT_CHECKPOINTS, LoadedModel, checkpoint_dir, load_stage
from .report import run_comparison

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MAX_EVAL_IMAGES = 500  # "evaluate now" in the app: bounded so one visitor cannot hold the CPU


def checkpoint_sets(root: str | Path | None = None, extra: str | Path | None = None) -> list[Path]:
    """Folders under ``root`` (default: the repository's checkpoints/) holding an ADV model, plus
    ``extra`` if given (e.g. --checkpoints DIR)."""
    root = Path(root) if root else DEFAULT_CHECKPOINTS.parent
    found = sorted(p for p in root.iterdir() if (p / "adv.safetensors").is_file()) if root.is_dir() else []
    if extra is not None:
        chosen = Path(extra).resolve()
        if chosen not in [p.resolve() for p in found]:
            found.insert(0, chosen)
    return [p.resolve() for p in found]


#: Explore's attackable networks -> the AMR-GMM checkpoint (h and g) trained on each.
AMR_FILES = {"adv": "amr.safetensors", "standard": "amr_standard.safetensors"}


class Lab:
    """The models of one checkpoint set: the robust (ADV) and undefended backbones, the AMR-GMM
    h/g trained on each, and the defense grid."""

    def __init__(self, folder: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        self.folder = checkpoint_dir(folder)
        self.adv: LoadedModel = load_stage(self.folder, "adv")
        self.backbones: dict[str, LoadedModel] = {"adv": self.adv}
        if (self.folder / "standard.safetensors").is_file():
            self.backbones["standard"] = load_stage(self.folder, "standard")
        self.bundles: dict[str, AMRBundle | None] = {}
        for network, loaded in self.backbones.items():
            amr = self.folder / AMR_FILES[network]
            bundle = load_amr(amr, device) if amr.is_file() else None
            if bundle is not None and bundle.card["parent"]["sha256"] != loaded.card["sha256"]:
                kind = "ADV" if network == "adv" else network
                raise CheckpointError(f"{amr.name} was trained on another {kind} backbone than "
                                      f"{self.folder / (network + '.safetensors')}")
            self.bundles[network] = bundle
        self.bundle: AMRBundle | None = self.bundles["adv"]
        self.defenses = DefenseSet(self.folder, device)
        self.ood: OODDetector | None = load_ood(self.folder, backbone=self.adv.model, device=device)
        for card, model in zip(self.defenses.cards, self.defenses.models):
            if card["dataset"] != self.adv.card["dataset"]:
                raise CheckpointError(f"{model.path.name} is a {card['dataset']} model; the set is {self.adv.card['dataset']}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.adv.class_names

    def model_names(self) -> list[str]:
        """``adv`` and every defense checkpoint of the set, in grid order."""
        return ["adv", *(m.label for m in self.defenses.models)]

    def model(self, name: str) -> nn.Module:
        if name == "adv":
            return self.adv.model
        for ref, net in zip(self.defenses.models, self.defenses.networks):
            if ref.label == name:
                return net
        raise KeyError(f"unknown model {name!r}; this set has {', '.join(self.model_names())}")

    def describe(self) -> dict[str, Any]:
        """Dataset, backbone, eps and each model's validation metrics (from the cards)."""
        card = self.adv.card
        models = [{"name": "adv", **card.get("metrics", {})}]
        models += [{"name": ref.label, **c.get("metrics", {})} for ref, c in zip(self.defenses.models, self.defenses.cards)]
        return {"folder": str(self.folder), "dataset": card["dataset"], "backbone": card["backbone"],
                "eps": card["eps"], "config": card.get("config_name"), "has_amr": self.bundle is not None,
                "models": models}

    def prepare(self, source: Any, auto_negate: bool = True) -> PreparedImage:
        """Any image as this set's model input; Fashion-MNIST sets convert photos the way the
        dataset was made (see ``cafe_core.data.images.prepare_image``)."""
        info = self.adv.info
        return prepare_image(source, info.channels, info.image_size, auto_negate=auto_negate,
                             fashion_mnist=self.adv.card["dataset"] == "fashion-mnist" and info.channels == 1)

    def ood_check(self, image: torch.Tensor) -> dict[str, Any] | None:
        """``{"score", "threshold", "flagged"}`` for one model input, None when the set has no detector."""
        return None if self.ood is None else self.ood.check(image)

    def networks(self) -> list[str]:
        """The networks Explore can attack: ``adv`` and, when the set has it, ``standard``."""
        return list(self.backbones)

    def comparison(self, image: torch.Tensor, true_label: int | None, bundle: AMRBundle | None = None,
                   network: str = "adv", **settings: Any) -> tuple[ExploreResult, list[dict[str, Any]]]:
        """The whole Explore analysis of one image (see ``report.run_comparison``) attacking
        ``network``, with the h and g trained on it, or another AMR-GMM ``bundle`` (e.g. one
        trained in the app's Train tab on the ADV backbone). A network without h and g gets the
        attack and its feature inversions only (``result.has_causal`` is False)."""
        if network not in self.backbones:
            raise KeyError(f"unknown network {network!r}; this set has {', '.join(self.backbones)}")
        if bundle is not None and network != "adv":
            raise ValueError("a trained h/g belongs to the robust (ADV) network")
        model: AMRBundle | nn.Module = bundle or self.bundles[network] or self.backbones[network].model
        settings.setdefault("eps", float(self.adv.card["eps"]))
        return run_comparison(model, self.defenses, image, true_label, self.class_names, network=network, **settings)

    def attributions(self, result: ExploreResult, model: str = "adv", ig_steps: int = 32) -> Attributions:
        """captum IG and Saliency of ``model`` for the clean, adversarial and inverted images of
        ``result``, toward the true class if known, else the clean prediction."""
        channels = self.adv.info.channels
        images = {k: image_from_uint8(result.images[k], channels) for k in ("clean", "adversarial", "inverted")
                  if k in result.images}
        true = result.settings.get("true_label")
        target = true if true is not None else result.predictions["natural"].label
        return attribute(self.model(model), images, target, ig_steps)

    def robustness(self) -> dict[str, Any] | None:
        """The robustness-grid results of this set: ``<folder>/robustness.json``, else
        ``benchmarks/results/robustness_<config>.json``; None if neither exists."""
        for path in (self.folder / "robustness.json", RESULTS_DIR / f"robustness_{self.adv.card.get('config_name')}.json"):
            if path.is_file():
                return json.loads(path.read_text())
        return None

    def evaluate_now(self, model: str, attack: str, n: int, eps: float | None = None, steps: int | None = None,
                     seed: int = 0, on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Accuracy of ``model`` under ``attack`` on the first ``n`` (<= MAX_EVAL_IMAGES) test images.

        Raises ``FileNotFoundError`` with a clear message when the dataset is not on this machine.
        """
        from ..data.datasets import load_split
        from ..evaluation.evaluate import evaluate_attacks

        n = int(n)
        if not 1 <= n <= MAX_EVAL_IMAGES:
            raise ValueError(f"n must be between 1 and {MAX_EVAL_IMAGES}, got {n}")
        net = self.model(model)
        card = self.adv.card
        eps = float(card["eps"] if eps is None else eps)
        cfg = card.get("config", {})
        try:
            test = load_split(card["dataset"], "test", None, cfg.get("n_val", 5000), cfg.get("seed", 0), limit=n,
                              download=False)
        except (FileNotFoundError, RuntimeError, OSError) as err:
            raise FileNotFoundError(f"the {card['dataset']} test set is not on this machine ({err})") from None
        result = evaluate_attacks(net, test, [attack], eps, seed, batch_size=50, steps={attack: steps},
                                  progress=False, on_batch=on_batch)
        seen = result["n_images"][attack]
        return {"model": model, "attack": attack, "eps": eps, "steps": steps, "seed": seed, "n_images": seen,
                "accuracy": result["accuracy"][attack]}


def robustness_rows(result: dict[str, Any]) -> tuple[list[str], list[list]]:
    """(headers, rows) of a robustness JSON for a table widget: accuracies in %, CI in points."""
    from ..evaluation.grid_markdown import table_cells
    from ..evaluation.grid_settings import COLUMNS

    headers = ["defense", "CAFE", *COLUMNS, "worst", "masking flags"]
    return headers, table_cells(result, ("baseline", "CAFE"))
