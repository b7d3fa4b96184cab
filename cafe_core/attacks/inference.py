"""Fast gradient-free forward passes for query attacks (Square inside AutoAttack).

Square's 5,000 queries are ~85% of a standard AutoAttack on a robust model, and each query
is a plain no-grad forward. TorchInductor with weight freezing (conv+BN folded, weights as
constants) runs that forward about 2x faster on a CPU for the lite backbone at large batches
(measured: 380 images, 2 threads, 372 ms eager -> 180 ms; ~1.5x at Square's ~76-image batches
on 1 thread, where the profile is still mostly aten convolutions). torch.compile does the work;
what this module adds is the safety around it: a private eval-mode copy, a check of the
compiled logits against the eager ones on the first real batch, and a silent fall-back to
the eager model when compilation is unavailable (no C++ compiler) or disagrees.
"""
from __future__ import annotations

import copy
import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Largest |compiled - eager| logit difference accepted on the check batch (float32 folding
#: differences are ~2e-6 on the lite models).
TOLERANCE = 1e-4

#: Image-forwards (queries x batch) below which compiling cannot pay for itself: compiling the
#: lite backbone costs ~8 s of CPU and the compiled forward saves ~0.2-0.5 ms per image (1-2
#: threads, batches of 2 to 380). A Square of 10 queries, or 5,000 queries on 2 images, runs
#: eagerly; AutoAttack's 5,000 queries on a batch of survivors are compiled.
COMPILE_MIN_IMAGES = 50_000


def fast_queries_enabled() -> bool:
    """False when ``CAFE_FAST_QUERIES=0`` (every query then goes through the eager model)."""
    return os.environ.get("CAFE_FAST_QUERIES", "1") != "0"


class QueryModel:
    """No-grad logits of ``model`` through a compiled, weight-frozen copy when that is exact enough.

    The copy is made and compiled at the first call (so building an attack whose batches are
    already stored costs nothing). That first call also runs the eager model and compares: the
    compiled copy is used only if every logit is within ``TOLERANCE`` and every argmax agrees.
    If the model's weights change afterwards (in-place updates bump their version counters) the
    copy is rebuilt and checked again; a model in training mode is always run eagerly.
    ``budget``: the most forwards the caller will make (None: unknown). Unless ``enabled`` is
    given, a copy is compiled only when ``budget`` times the first batch's images reaches
    ``COMPILE_MIN_IMAGES``. ``status`` is ``"pending"``, ``"compiled"`` or ``"eager"`` (with ``reason``).
    """

    def __init__(self, model: nn.Module, enabled: bool | None = None, budget: int | None = None) -> None:
        self.model = model
        self.enabled = fast_queries_enabled() if enabled is None else enabled
        self.budget = budget if enabled is None else None  # an explicit choice is not second-guessed
        self.status = "pending" if self.enabled else "eager"
        self.reason = "" if self.enabled else "disabled"
        self._compiled: nn.Module | None = None
        self._weights_version = -1

    def _version(self) -> int:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t._version for t in tensors)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.model.training:
            return self.model(images)
        if self.status == "compiled" and self._version() != self._weights_version:
            self.status, self._compiled = "pending", None
        if self.status == "compiled":
            return self._compiled(images)
        if self.status == "pending" and len(images):
            if self.budget is not None and self.budget * len(images) < COMPILE_MIN_IMAGES:
                self.status, self.reason = "eager", f"{self.budget} queries of {len(images)} images: too few to compile"
                return self.model(images)
            return self._compile_and_check(images)
        return self.model(images)

    def _compile_and_check(self, images: torch.Tensor) -> torch.Tensor:
        eager = self.model(images)
        self._weights_version = self._version()
        try:
            frozen = copy.deepcopy(self.model).eval()
            compiled = torch.compile(frozen, dynamic=True, options={"freezing": True})
            fast = compiled(images)
        except Exception as exc:  # no compiler, unsupported op, ...: the eager model still works
            return self._fall_back(eager, f"compile failed: {type(exc).__name__}: {exc}")
        gap = (fast - eager).abs().max().item() if eager.numel() else 0.0
        if not gap <= TOLERANCE or not torch.equal(fast.argmax(1), eager.argmax(1)):
            return self._fall_back(eager, f"compiled logits differ by {gap:.2e}")
        self._compiled, self.status = compiled, "compiled"
        return eager

    def _fall_back(self, eager: torch.Tensor, reason: str) -> torch.Tensor:
        log.warning("query model: using the eager model (%s)", reason)
        self.status, self.reason = "eager", reason
        return eager
