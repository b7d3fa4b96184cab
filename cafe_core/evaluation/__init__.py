"""Measuring robustness: accuracy under attack, the robustness grid (rows, settings, state, statistics,
masking check, markdown, curves), the plain names of the networks and the out-of-distribution score."""
