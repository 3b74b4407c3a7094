"""Shared machinery of decentjax: graphs, weights, communication, loops, metrics."""

from decentjax.core import python_version  # noqa: F401 - checks the Python version first.
