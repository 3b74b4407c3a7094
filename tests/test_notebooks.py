"""The notebooks run, and their paired ``.ipynb`` files match and carry no outputs.

Every ``notebooks/NN_name.py`` (jupytext percent format) is executed as a plain script in
a subprocess with ``DECENTJAX_NOTEBOOK_QUICK=1`` (tiny sizes) and the Agg backend, so no
Jupyter kernel is needed and this process's JAX settings (8 fake devices, strict dtype
promotion, see ``conftest.py``) do not leak into it: the notebooks run as a researcher
would run them, on the default devices. Each ``.ipynb`` must hold the same cells as its
``.py`` (read with jupytext, a test dependency) and no outputs or execution counts. To
regenerate the ``.ipynb`` files after editing a ``.py``: ``jupytext --sync notebooks/*.py``.
"""

import glob
import json
import os
import subprocess
import sys

import jupytext
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "[0-9][0-9]_*.py")))
NAMES = [os.path.basename(path)[:-3] for path in NOTEBOOKS]
QUICK_TIMEOUT_S = 300  # A notebook takes 10-30 s in quick mode on 2 CPU cores.


def _script_cells(path: str) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in jupytext.read(path).cells]


def _ipynb(path: str) -> dict:
    with open(path[:-3] + ".ipynb", encoding="utf-8") as f:
        return json.load(f)


def _ipynb_cells(notebook: dict) -> list[tuple[str, str]]:
    return [(cell["cell_type"], "".join(cell["source"])) for cell in notebook["cells"]]


def test_every_notebook_is_paired():
    assert len(NOTEBOOKS) >= 6, f"expected the six notebooks, found {NAMES}"
    scripts = {name + ".ipynb" for name in NAMES}
    ipynbs = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "notebooks", "*.ipynb"))}
    assert ipynbs == scripts, f"unpaired: {sorted(ipynbs ^ scripts)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_ipynb_matches_script_and_has_no_outputs(path):
    notebook = _ipynb(path)
    assert notebook["nbformat"] == 4
    script, paired = _script_cells(path), _ipynb_cells(notebook)
    assert [t for t, _ in paired] == [t for t, _ in script], "cell types differ"
    for k, ((_, want), (_, got)) in enumerate(zip(script, paired, strict=True)):
        assert got == want, (
            f"cell {k} of {os.path.basename(path)[:-3]}.ipynb differs from the .py; "
            "run `jupytext --sync notebooks/*.py`"
        )
    for k, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {k} has outputs; strip them"
            assert cell["execution_count"] is None, f"cell {k} has an execution count"
    # The Colab set-up comes first and the quick switch is read there.
    first = script[0][1]
    assert script[0][0] == "code" and 'REPO_URL = "<REPO_URL>"' in first
    assert "DECENTJAX_NOTEBOOK_QUICK" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_in_quick_mode(path):
    env = dict(os.environ)
    env["DECENTJAX_NOTEBOOK_QUICK"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    try:
        result = subprocess.run(
            [sys.executable, path],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=QUICK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{os.path.basename(path)} ran past {QUICK_TIMEOUT_S} s: {error}")
    assert result.returncode == 0, (
        f"{os.path.basename(path)} exited with {result.returncode}\n"
        f"--- stdout (tail) ---\n{result.stdout[-3000:]}\n"
        f"--- stderr (tail) ---\n{result.stderr[-5000:]}"
    )
