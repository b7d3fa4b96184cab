"""The paper's causal side: the five predictions, the analysis over a dataset, feature inversion, attributions."""
