"""The one Python-version check, run when ``core`` (so any decentjax package) is imported.

Kept free of newer syntax (f-strings are Python 3.6) so that an older interpreter
reaches the message instead of a ``SyntaxError`` or an ``ImportError`` of
``typing.Self`` deep inside the library.
"""

import sys

REQUIRED = (3, 11)


def check(version_info=sys.version_info):
    """Raises ``RuntimeError`` naming the running and the required Python when too old.

    Args:
      version_info: the version to check (default: this interpreter's).
    """
    if tuple(version_info[:2]) < REQUIRED:
        raise RuntimeError(
            f"decentjax needs Python >= {REQUIRED[0]}.{REQUIRED[1]}; this is Python "
            f"{version_info[0]}.{version_info[1]} ({sys.executable}). Create the venv with "
            "a newer interpreter, e.g. `python3.11 -m venv .venv`."
        )


check()
