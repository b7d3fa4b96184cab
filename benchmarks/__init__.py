"""Benchmarks, each run from the repository root as ``python benchmarks/<name>.py`` (with this
repository installed: ``pip install -e .``, which ``requirements-dev.txt`` does) or as
``python -m benchmarks.<name>`` (no install needed); each writes benchmarks/results/<name>*.json + .md."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_app() -> ModuleType:
    """The web app's module (``app.py`` at the repository root: a script, not part of the installed
    package), for its example images and defaults; imported once, as ``app``."""
    if "app" in sys.modules:
        return sys.modules["app"]
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["app"]
        raise
    return module
