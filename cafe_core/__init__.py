"""CAFE Lab core: causal features on adversarial examples (Kim, Lee, Ro, CVPR 2023).

Importable without gradio. Submodules: data, models, attacks, train, checkpoints, evaluate, cli.
"""
__version__ = "0.1.0"
