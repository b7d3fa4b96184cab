"""Files: safetensors checkpoints with their cards, pickle-free state, recipes (TOML), provenance of results,
text helpers."""
