"""The backbone registry (kept in its own module so model files can import it without cycles)."""
from ..registry import Registry

MODELS: Registry = Registry("backbone")
