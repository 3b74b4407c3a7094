"""The Python >= 3.11 requirement is stated on import, in words, and in pyproject."""

import pathlib
import sys
import tomllib

import pytest

from decentjax.core import python_version

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_old_python_gets_a_message_naming_both_versions():
    with pytest.raises(RuntimeError, match=r"needs Python >= 3\.11; this is Python 3\.10"):
        python_version.check((3, 10, 12, "final", 0))
    python_version.check((3, 11, 0, "final", 0))
    python_version.check(sys.version_info)


def test_pyproject_requires_the_same_python():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">={}.{}".format(*python_version.REQUIRED)
