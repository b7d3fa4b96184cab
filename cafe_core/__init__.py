"""CAFE Lab core: causal features on adversarial examples (Kim, Lee, Ro, CVPR 2023).

Importable without gradio. One subpackage per concept, each importing only those before it
(docs/architecture.md): ``data``, ``models``, ``io`` (checkpoints, pickle-free state, recipes,
provenance), ``attacks``, ``causal``, ``defenses``, ``evaluation``, ``training``, ``serving`` (what the
app shows, as plain data) and ``cli`` (one module per command); ``registry`` and ``distributed`` are
shared by all.
"""
__version__ = "0.1.0"
