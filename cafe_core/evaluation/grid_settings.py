"""What the robustness grid measures and how: its columns, phases and attack budgets.

``GridSettings.from_recipe(config, **flags)`` builds the settings once: the defaults below, then
the recipe's ``[evaluation]`` tables, then the command line's per-attack flags. The CLI, the
pipeline and ``grid_stale_reason`` all use it, and the grid JSON records ``settings.to_json()``, so
a saved result can be compared with the settings a run would use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

COLUMNS = ("clean", "fgsm", "pgd", "cw", "apgd_ce", "apgd_dlr", "autoattack")
ATTACK_COLUMNS = COLUMNS[1:]
#: Relative radii of the robust-accuracy-vs-eps curves (x the config's eps); the largest one
#: must drive any honest model close to zero, which is part of the masking check.
CURVE_MULTIPLIERS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)
#: Grid evaluation order, breadth first over models, so a cut run leaves balanced partial results.
PHASES = ("fast", "autoattack", "strong", "curves")
PHASE_ATTACKS = {"fast": ("clean", "fgsm", "pgd", "square"), "autoattack": ("autoattack",),
                 "strong": ("cw", "apgd_ce", "apgd_dlr")}
DEFAULT_LIMITS = {"autoattack": 1000, "square": 500}
DEFAULT_CURVE_N = {"pgd": 1000, "autoattack": 100}
DEFAULT_STEPS = {"pgd": 30, "cw": 100, "apgd_ce": 100, "apgd_dlr": 100, "autoattack": 100, "square": 1000}
DEFAULT_BATCH_SIZE = 500
DEFAULT_CURVE_ATTACKS = ("pgd", "autoattack")


@dataclass(frozen=True)
class GridSettings:
    """The grid's settings (the same test images, seed and budget for every row).

    Attributes:
        seed: attack seed. batch_size: images per attack batch; batch_sizes: per-attack
            exceptions (stored results are keyed by the batch size).
        limits: images per attack (default: all; AutoAttack 1,000; Square 500).
        steps: iterations per attack (defaults: PGD-30, CW/APGD/AutoAttack 100, Square 1,000 queries).
        curve_n: images per curve attack; curve_attacks: the attacks of the eps curves.
        curve_multipliers: per curve attack, the radii (x eps, a subset of ``CURVE_MULTIPLIERS``)
            it runs at; an attack not listed runs at every radius.
    """

    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_sizes: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    steps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STEPS))
    curve_n: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CURVE_N))
    curve_attacks: tuple[str, ...] = DEFAULT_CURVE_ATTACKS
    curve_multipliers: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, config: Mapping[str, Any] | None = None, *, seed: int = 0,
                    batch_size: int | None = None, batch_sizes: Mapping[str, int] | None = None,
                    limits: Mapping[str, int] | None = None, steps: Mapping[str, int] | None = None,
                    curve_n: Mapping[str, int] | None = None,
                    curve_attacks: Sequence[str] = DEFAULT_CURVE_ATTACKS,
                    curve_multipliers: Mapping[str, Sequence[float]] | None = None) -> GridSettings:
        """The defaults, then ``config``'s ``[evaluation]`` tables (none: the defaults), then the
        keyword overrides (the CLI's flags), per attack."""
        evaluation = (config or {}).get("evaluation", {})
        multipliers = {**evaluation.get("curve_multipliers", {}), **(curve_multipliers or {})}
        return cls(seed=seed, batch_size=int(batch_size or evaluation.get("batch_size", DEFAULT_BATCH_SIZE)),
                   batch_sizes={a: int(b) for a, b in {**evaluation.get("batch_sizes", {}), **(batch_sizes or {})}.items()},
                   limits={**DEFAULT_LIMITS, **evaluation.get("limits", {}), **(limits or {})},
                   steps={**DEFAULT_STEPS, **evaluation.get("steps", {}), **(steps or {})},
                   curve_n={**DEFAULT_CURVE_N, **evaluation.get("curve_n", {}), **(curve_n or {})},
                   curve_attacks=tuple(curve_attacks),
                   curve_multipliers={a: [float(m) for m in ms] for a, ms in multipliers.items()})

    def batch_size_of(self, attack: str) -> int:
        return self.batch_sizes.get(attack, self.batch_size)

    def flags(self, config: Mapping[str, Any] | None = None) -> list[str]:
        """The ``evaluate --grid`` flags that turn ``from_recipe(config)`` into these settings: only
        what differs from the recipe, one ``ATTACK=N`` per attack, in a fixed order."""
        recipe = GridSettings.from_recipe(config)
        out: list[str] = []
        for flag, mine, theirs in (("--limit", self.limits, recipe.limits), ("--steps", self.steps, recipe.steps),
                                   ("--curve-n", self.curve_n, recipe.curve_n),
                                   ("--attack-batch-size", self.batch_sizes, recipe.batch_sizes)):
            out += [item for attack in sorted(mine) if mine[attack] != theirs.get(attack)
                    for item in (flag, f"{attack}={mine[attack]}")]
        if self.batch_size != recipe.batch_size:
            out += ["--batch-size", str(self.batch_size)]
        if self.seed != recipe.seed:
            out += ["--seed", str(self.seed)]
        if self.curve_attacks != recipe.curve_attacks:
            out += ["--curve-attacks", ",".join(self.curve_attacks)]
        return out

    def command(self, config: Mapping[str, Any], n_images: int | None = None, recipe: str | None = None) -> str:
        """The command that computes every number of the grid with these settings (all phases, every
        row); state already on disk is reused, so rerunning it on a finished grid only reassembles.
        ``recipe``: how ``--grid`` names the recipe (default: its name in configs/)."""
        n = ["--n", str(n_images)] if n_images else []
        return " ".join(["python", "-m", "cafe_core", "evaluate", "--grid", recipe or str(config.get("name")), *n,
                         *self.flags(config)])

    def to_json(self) -> dict[str, Any]:
        """The settings as the grid JSON records them (plain dicts and lists)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "batch_sizes": dict(self.batch_sizes),
                "limits": dict(self.limits), "steps": dict(self.steps), "curve_n": dict(self.curve_n),
                "curve_attacks": list(self.curve_attacks),
                "curve_multipliers": {a: list(ms) for a, ms in self.curve_multipliers.items()}}
