"""``python -m cafe_core report``: re-render the markdown of a results JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..io.reporting import causal_markdown, eval_markdown
    from ..io.serialization import atomic_write_text

    path = Path(args.json)
    result = json.loads(path.read_text())
    text = causal_markdown(result) if "kl_x1000" in result else eval_markdown(result)
    atomic_write_text(path.with_suffix(".md"), text + "\n")
    print(text)
    return 0
