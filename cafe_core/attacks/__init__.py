"""Attacks (one callable per attack, model in eval mode, inputs in [0,1]): the registry, causal inversion,
fast gradient-free queries and stacked classifiers."""
