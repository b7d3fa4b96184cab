"""The robustness grid's public names in one import, for code written before the grid was split
by concept (kept so that ``from cafe_core.robustness import ...`` goes on working):

* ``grid_rows``: the rows (``GridRow``, ``GridModel``, ``grid_models``);
* ``grid_settings``: columns, phases, budgets (``GridSettings``);
* ``statistics``: paired bootstrap CIs, worst case, subset check, the paper's claim;
* ``masking``: the gradient-masking check;
* ``grid``: the runner (``RobustnessGrid``, ``evaluate_grid``) and ``grid_stale_reason``;
* ``grid_markdown``: the table and its sentences; ``curves``: the eps curves.

New code imports from those modules.
"""
from __future__ import annotations

from .curves import curve_series, curves_png
from .grid import (RobustnessGrid, build_rows, evaluate_grid, grid_result_path, grid_stale_reason, grid_state_dir,
                   stale_grid_state)
from .grid_markdown import robustness_markdown, table_cells, verdict
from .grid_rows import GridModel, GridRow, grid_models, grid_rows
from .grid_settings import (ATTACK_COLUMNS, COLUMNS, CURVE_MULTIPLIERS, DEFAULT_CURVE_N, DEFAULT_LIMITS, DEFAULT_STEPS,
                            PHASE_ATTACKS, PHASES, GridSettings)
from .masking import masking_check
from .statistics import (claim_check, paired_bootstrap_ci, paired_difference, subset_check, worst_case,
                         worst_vector)

__all__ = ["ATTACK_COLUMNS", "COLUMNS", "CURVE_MULTIPLIERS", "DEFAULT_CURVE_N", "DEFAULT_LIMITS", "DEFAULT_STEPS",
           "GridModel", "GridRow", "GridSettings", "PHASES", "PHASE_ATTACKS", "RobustnessGrid", "build_rows",
           "claim_check", "curve_series", "curves_png", "evaluate_grid", "grid_models", "grid_result_path",
           "grid_rows", "grid_stale_reason", "grid_state_dir", "masking_check", "paired_bootstrap_ci",
           "paired_difference", "robustness_markdown", "stale_grid_state", "subset_check", "table_cells", "verdict",
           "worst_case", "worst_vector"]
