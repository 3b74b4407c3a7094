"""The notebooks run, and their paired ``.ipynb`` files match and carry no outputs.

Every ``notebooks/NN_name.py`` (jupytext percent format) is executed as a plain script in
a subprocess with ``DECENTJAX_NOTEBOOK_QUICK=1`` (tiny sizes) and the Agg backend, so no
Jupyter kernel is needed and this process's JAX settings (8 fake devices, strict dtype
promotion, see ``conftest.py``) do not leak into it: the notebooks run as a researcher
would run them, on the default devices. Each ``.ipynb`` must hold the same cells as its
``.py`` (read with jupytext when it is installed, otherwise with the small percent-format
reader below) and no outputs or execution counts. To regenerate the ``.ipynb`` files
after editing a ``.py``: ``pip install jupytext && jupytext --sync notebooks/*.py``.
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "[0-9][0-9]_*.py")))
NAMES = [os.path.basename(path)[:-3] for path in NOTEBOOKS]
QUICK_TIMEOUT_S = 300  # A notebook takes 10-30 s in quick mode on 2 CPU cores.

try:
    import jupytext
except ImportError:  # Not a test dependency: the reader below is the fallback.
    jupytext = None


def _percent_cells(text: str) -> list[tuple[str, str]]:
    """``(cell_type, source)`` of a jupytext percent-format script, as jupytext reads it.

    Handles what the notebooks here use: a ``# ---`` YAML header, ``# %%`` code cells and
    ``# %% [markdown]`` cells whose lines are ``# text`` (or a bare ``#``). Blank lines
    around a cell's body are dropped.
    """
    lines = text.splitlines()
    start = 0
    if lines and lines[0] == "# ---":
        start = lines.index("# ---", 1) + 1
    cells: list[tuple[str, list[str]]] = []
    for line in lines[start:]:
        marker = re.match(r"^# %%(.*)$", line)
        if marker:
            cells.append(("markdown" if "[markdown]" in marker.group(1) else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' cell marker: {line!r}")
    out = []
    for cell_type, body in cells:
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if cell_type == "markdown":
            body = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in body]
        out.append((cell_type, "\n".join(body)))
    return out


def _script_cells(path: str) -> list[tuple[str, str]]:
    if jupytext is not None:
        return [(cell.cell_type, cell.source) for cell in jupytext.read(path).cells]
    with open(path, encoding="utf-8") as f:
        return _percent_cells(f.read())


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


@pytest.mark.skipif(jupytext is None, reason="jupytext is not installed")
def test_fallback_reader_agrees_with_jupytext():
    for path in NOTEBOOKS:
        with open(path, encoding="utf-8") as f:
            mine = _percent_cells(f.read())
        assert mine == [(c.cell_type, c.source) for c in jupytext.read(path).cells], path


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
