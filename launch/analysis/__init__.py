"""Small scripts that recompute figures quoted in config docstrings (``python -m``)."""
