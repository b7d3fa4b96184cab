"""Plotly figures built from plain results (shared by the app and reports; no gradio here)."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from .explore import ExploreResult

PREDICTION_LABELS = {"natural": "Natural", "adversarial": "Adversarial", "causal": "Causal (AC)",
                     "counterfactual": "Counterfactual (CF)"}
COLOURS = {"natural": "#4c78a8", "adversarial": "#e45756", "causal": "#54a24b", "counterfactual": "#b279a2",
           "z": "#9d755d", "h_z": "#54a24b", "g_z": "#b279a2"}


def probability_bars(result: ExploreResult, keys: Sequence[str] = tuple(PREDICTION_LABELS)) -> go.Figure:
    """Grouped bars: per-class probability of the Natural / Adversarial / Causal / Counterfactual predictions."""
    fig = go.Figure()
    for key in keys:
        view = result.predictions[key]
        fig.add_bar(name=PREDICTION_LABELS.get(key, key), x=list(result.class_names), y=view.probabilities,
                    marker_color=COLOURS.get(key))
    fig.update_layout(barmode="group", yaxis=dict(title="probability", range=[0, 1]), height=320,
                      margin=dict(l=40, r=10, t=30, b=80), legend=dict(orientation="h", y=1.15),
                      title="What each feature predicts")
    return fig


def channel_bars(result: ExploreResult) -> go.Figure:
    """Per-channel (spatial mean) values of Z, h(Z) and g(Z) for the channels where they are largest."""
    ch = result.channels
    x = [f"c{i}" for i in ch["index"]]
    fig = go.Figure()
    for key, label in (("z", "Z = f(x_adv) - f(x)"), ("h_z", "h(Z) causal"), ("g_z", "g(Z) counterfactual")):
        fig.add_bar(name=label, x=x, y=ch[key], marker_color=COLOURS[key])
    fig.update_layout(barmode="group", height=300, margin=dict(l=40, r=10, t=30, b=40),
                      legend=dict(orientation="h", y=1.18), yaxis=dict(title="mean over positions"),
                      title="Feature variation and what h and g make of it (top channels)")
    return fig
