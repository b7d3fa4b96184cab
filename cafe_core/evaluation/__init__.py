"""Measuring robustness: accuracy under attack, the robustness grid (rows, settings, state, statistics,
masking check, markdown, curves), the out-of-distribution score, and the pipeline that runs a recipe."""
