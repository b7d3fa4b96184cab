"""Plotly figures built from plain results (shared by the app and reports; no gradio here)."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from ..evaluation.curves import ATTACK_MARKERS, DEFENSE_COLOURS, MODE_DASHES, curve_series
from ..evaluation.names import defense_name
from .explore import ExploreResult

PREDICTION_LABELS = {"natural": "Natural", "adversarial": "Adversarial", "causal": "Causal (AC)",
                     "counterfactual": "Counterfactual (CF)"}
COLOURS = {"natural": "#4c78a8", "adversarial": "#e45756", "causal": "#54a24b", "counterfactual": "#b279a2",
           "z": "#9d755d", "h_z": "#54a24b", "g_z": "#b279a2"}


def probability_bars(result: ExploreResult, keys: Sequence[str] = tuple(PREDICTION_LABELS)) -> go.Figure:
    """Grouped bars: per-class probability of the Natural / Adversarial / Causal / Counterfactual predictions."""
    fig = go.Figure()
    for key in (k for k in keys if k in result.predictions):  # no h/g: Natural and Adversarial only
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
    fig = go.Figure()
    if not ch:
        fig.update_layout(height=120, margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(visible=False),
                          yaxis=dict(visible=False), title="No causal estimator h for this network: no channel bars")
        return fig
    x = [f"c{i}" for i in ch["index"]]
    for key, label in (("z", "Z = f(x_adv) - f(x)"), ("h_z", "h(Z) causal"), ("g_z", "g(Z) counterfactual")):
        fig.add_bar(name=label, x=x, y=ch[key], marker_color=COLOURS[key])
    fig.update_layout(barmode="group", height=300, margin=dict(l=40, r=10, t=30, b=40),
                      legend=dict(orientation="h", y=1.18), yaxis=dict(title="mean over positions"),
                      title="Feature variation and what h and g make of it (top channels)")
    return fig


def robustness_curves(result: dict) -> go.Figure:
    """Robust accuracy vs eps for every model of a robustness JSON: the series of
    ``curves.curve_series`` in the README picture's look (colour per defense, line style per CAFE
    mode: baseline dotted, CAFE solid, h = 0 control dash-dot; marker per attack)."""
    fig = go.Figure()
    for line in curve_series(result):
        fig.add_scatter(x=line.eps_255, y=line.accuracy, mode="lines+markers",
                        name=f"{defense_name(line.defense, line.mode)}, {line.attack}",
                        line=dict(dash=MODE_DASHES[line.mode][1], color=DEFENSE_COLOURS.get(line.defense, "grey")),
                        marker=dict(symbol=ATTACK_MARKERS[line.attack][1], size=6))
    fig.update_layout(xaxis=dict(title="eps (/255)"), yaxis=dict(title="robust accuracy %", range=[0, 100]),
                      height=380, margin=dict(l=50, r=10, t=30, b=40), title="Robust accuracy vs attack radius")
    return fig


def causal_graph() -> go.Figure:
    """The instrumental-variable graph of the paper: Z -> T -> Y, with a hidden confounder U -> T, Y."""
    nodes = {"Z": (0.0, 0.0, "Z: feature variation<br>f(x_adv) - f(x)<br>(instrument)"),
             "T": (1.0, 0.0, "T: treatment<br>the feature the head reads"),
             "Y": (2.0, 0.0, "Y: prediction"),
             "U": (1.5, 0.8, "U: confounder<br>(spurious, non-robust cues)")}
    fig = go.Figure()
    for start, end, dash in (("Z", "T", "solid"), ("T", "Y", "solid"), ("U", "T", "dot"), ("U", "Y", "dot")):
        (x0, y0, _), (x1, y1, _) = nodes[start], nodes[end]
        fig.add_annotation(x=x1 - 0.12 * (x1 - x0), y=y1 - 0.12 * (y1 - y0), ax=x0 + 0.12 * (x1 - x0),
                           ay=y0 + 0.12 * (y1 - y0), xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, arrowsize=1.5, arrowwidth=2, arrowcolor="#555" if dash == "solid" else "#e45756")
    fig.add_scatter(x=[v[0] for v in nodes.values()], y=[v[1] for v in nodes.values()], mode="markers+text",
                    text=[v[2] for v in nodes.values()], textposition="bottom center", hoverinfo="text",
                    marker=dict(size=46, color=["#9d755d", "#4c78a8", "#54a24b", "#e45756"]), showlegend=False)
    fig.update_layout(xaxis=dict(visible=False, range=[-0.5, 2.5]), yaxis=dict(visible=False, range=[-0.6, 1.1]),
                      height=340, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      title="Z moves T, and reaches Y only through T: h estimates the part of T that causes Y")
    return fig


def training_curves(records: Sequence[dict]) -> tuple[go.Figure, go.Figure]:
    """Two live figures of an AMR-GMM run: the two losses, and the validation accuracies, per epoch."""
    epochs = [r["epoch"] for r in records]
    losses, accuracies = go.Figure(), go.Figure()
    for key, label in (("train_loss_g", "loss_g (max step, g)"), ("train_loss_h", "loss_h (min step, h)")):
        losses.add_scatter(x=epochs, y=[r.get(key) for r in records], mode="lines+markers", name=label)
    for key in ("natural", "adversarial", "causal", "counterfactual"):
        accuracies.add_scatter(x=epochs, y=[100 * r.get(f"val_{key}_acc", float("nan")) for r in records],
                               mode="lines+markers", name=PREDICTION_LABELS[key], line=dict(color=COLOURS[key]))
    losses.update_layout(title="The two players' losses", xaxis=dict(title="epoch"), height=300,
                         margin=dict(l=40, r=10, t=40, b=40))
    accuracies.update_layout(title="Validation accuracy of the four predictions", xaxis=dict(title="epoch"),
                             yaxis=dict(title="%", range=[0, 100]), height=300, margin=dict(l=40, r=10, t=40, b=40))
    return losses, accuracies
