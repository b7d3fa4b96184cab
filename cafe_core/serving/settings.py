"""The app's default analysis settings and the one place that checks settings from a user.

The gallery rule, the lesson, the start-up example and the latency benchmark all use
``explore_defaults``, so "the app's default settings" means one thing. Every value that arrives
from a browser or an API caller passes ``explore_settings`` (sliders are not trusted).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..attacks.registry import ATTACK_INFO

DEFAULT_ATTACK = "pgd"
DEFAULT_STEPS = 10       # PGD-10: the whole Explore answer (every network included) stays near a second
DEFAULT_SEED = 0
MAX_STEPS = 100
MAX_EPS_255 = 64
#: Attacks offered in the app, as (label, name); Square and FGSM-RS are for the grid only.
ATTACK_CHOICES = [(info.label, name) for name, info in ATTACK_INFO.items() if name not in ("fgsm_rs", "square")]
ATTACK_NAMES = frozenset(name for _, name in ATTACK_CHOICES)


# Serving. One torch thread per request, two requests at once: measured on 2 cores, a request
# running in gradio's worker thread with 2 torch threads took 2.8 s (its OpenMP team fights the
# idle, still spinning team of another thread) against 1.1 s with 1 thread.
TORCH_THREADS = 1
QUEUE_SIZE = 32          # waiting requests; beyond this a caller gets "Queue is full! Please try again."
CONCURRENCY = 2          # requests computed at once (2 cores)
# Explore analyses run in worker processes (cafe_core.serving.workers explains why not threads); 0: in-process.
WORKERS = int(os.environ.get("CAFE_WORKERS", "2"))


class UserError(ValueError):
    """A problem with what the user asked for, worded for them (the app shows it as it is)."""


def default_eps_255(eps: float) -> int:
    """The eps slider's default, in /255, for a checkpoint set trained at ``eps`` on [0, 1]."""
    return round(255 * eps)


def explore_defaults(eps: float) -> dict[str, Any]:
    """The analysis a first click runs: PGD-10 at the set's eps (as the slider shows it), seed 0."""
    return {"attack": DEFAULT_ATTACK, "eps": default_eps_255(eps) / 255, "steps": DEFAULT_STEPS,
            "seed": DEFAULT_SEED, "target": None}


def checked_number(value: Any, low: float, high: float, what: str) -> float:
    """A finite number within [low, high], else a ``UserError`` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number") from None
    if number != number or not low <= number <= high:
        raise UserError(f"{what} must be between {low:g} and {high:g}, got {value}")
    return number


def checked_attack(attack: Any, extra: Sequence[str] = ()) -> str:
    if attack not in ATTACK_NAMES and attack not in extra:
        raise UserError(f"Unknown attack {attack!r}; choose one of {', '.join(sorted({*ATTACK_NAMES, *extra}))}")
    return str(attack)


def explore_settings(attack: Any, eps_255: Any, steps: Any, seed: Any, target: Any,
                     class_names: Sequence[str]) -> dict[str, Any]:
    """Checked analysis settings from user values (eps in /255, target a class name or "none")."""
    settings = {"attack": checked_attack(attack), "eps": checked_number(eps_255, 0, MAX_EPS_255, "eps (/255)") / 255,
                "steps": int(checked_number(steps, 1, MAX_STEPS, "steps")),
                "seed": int(checked_number(seed, 0, 2**31 - 1, "seed"))}
    if target in (None, "", "none"):
        settings["target"] = None
    elif target in class_names:
        settings["target"] = list(class_names).index(target)
    else:
        raise UserError(f"Unknown target class {target!r}")
    return settings
