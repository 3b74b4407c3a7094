"""decentjax: decentralized and federated optimization in JAX.

Every agent is a slice of a sharded array (``shard_map`` over a device mesh)::

    from decentjax import algos, core, models
    from decentjax.launch import train

The repository keeps the library's packages ``core/``, ``algos/``, ``models/`` and
``launch/`` at its top level; installed, they are ``decentjax.core``,
``decentjax.algos``, ``decentjax.models`` and ``decentjax.launch`` (``pyproject.toml``
maps them), so a research folder with its own ``models.py`` or ``core/`` cannot shadow
them. In a source checkout (an editable install, or running from the repository root)
this package finds them in the repository root.
"""

import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_ROOT, "pyproject.toml")) and _os.path.isfile(
    _os.path.join(_ROOT, "core", "__init__.py")
):
    # Source checkout: decentjax.core is <root>/core (an installed wheel has it inside).
    __path__.append(_ROOT)  # noqa: F821 - __path__ is defined for packages.

__version__ = "0.1.0"
