"""The notebooks run, their committed ``.ipynb`` files are executed and current.

Every ``notebooks/NN_name.py`` (jupytext percent format) is executed as a plain script in
a subprocess with ``DECENTJAX_NOTEBOOK_QUICK=1`` (tiny sizes) and the Agg backend, so no
Jupyter kernel is needed and this process's JAX settings (8 fake devices, strict dtype
promotion, see ``conftest.py``) do not leak into it.

Executing the notebooks at full size takes minutes, too slow for CI, so the committed
``.ipynb`` files are checked for staleness instead: each holds the same cells as its
``.py`` and the sha256 of the ``.py`` it was executed from, every code cell ran once in
order in one kernel, none raised, and the file stays small. The set-up cell and the
Colab badges (here and in the README) must be the ones ``launch.notebooks`` generates
from ``pyproject.toml``'s repository URL. To regenerate: ``python -m decentjax.launch.notebooks``.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import jupytext
import pytest

from decentjax.launch import notebooks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "[0-9][0-9]_*.py")))
NAMES = [os.path.basename(path)[:-3] for path in NOTEBOOKS]
QUICK_TIMEOUT_S = 300  # A notebook takes 10-30 s in quick mode on 2 CPU cores.
MAX_IPYNB_BYTES = 300_000  # outputs kept small: a few figures at the inline backend's dpi
REGENERATE = "regenerate with `python -m decentjax.launch.notebooks`"


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
def test_ipynb_is_executed_from_the_current_script(path):
    name = os.path.basename(path)[:-3]
    assert os.path.getsize(path[:-3] + ".ipynb") < MAX_IPYNB_BYTES, f"{name}.ipynb too large"
    notebook = _ipynb(path)
    assert notebook["nbformat"] == 4
    script, paired = _script_cells(path), _ipynb_cells(notebook)
    assert [t for t, _ in paired] == [t for t, _ in script], f"cell types differ; {REGENERATE}"
    for k, ((_, want), (_, got)) in enumerate(zip(script, paired, strict=True)):
        assert got == want, f"cell {k} of {name}.ipynb differs from the .py; {REGENERATE}"
    executed_from = notebook["metadata"].get("decentjax", {}).get("source_sha256")
    assert executed_from == notebooks.source_hash(Path(path)), f"{name}.ipynb is stale"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    counts = [cell["execution_count"] for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"not run top to bottom once: {counts}"
    outputs = [out for cell in code for out in cell["outputs"]]
    errors = [out for out in outputs if out["output_type"] == "error"]
    assert not errors, f"{name}.ipynb raised: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any(out["output_type"] == "stream" for out in outputs), f"{name}.ipynb printed nothing"
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, f"{name}.ipynb carries no figure"


def test_setup_cell_badges_and_readme_come_from_pyproject():
    url = notebooks.repository_url()
    assert url == "https://github.com/decentjax/decentjax"
    for path in NOTEBOOKS:
        name = os.path.basename(path)[:-3]
        (kind, setup), (_, title) = _script_cells(path)[:2]
        assert kind == "code" and setup == notebooks.setup_cell(url), f"{name}: {REGENERATE}"
        assert "<REPO_URL>" not in setup and "OWNER" not in setup
        assert title.split("\n")[1] == notebooks.colab_badge(url, name), f"{name}: badge"
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert notebooks.readme_block(url, [Path(p) for p in NOTEBOOKS]) in readme, REGENERATE
    assert "OWNER/REPO" not in readme


def test_repository_url_must_be_a_github_repository(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/a/b.git/"\n')
    assert notebooks.repository_url(pyproject) == "https://github.com/a/b"
    pyproject.write_text('[project.urls]\nRepository = "<REPO_URL>"\n')
    with pytest.raises(ValueError, match=r"Repository = '<REPO_URL>'.*https://github.com/OWNER"):
        notebooks.repository_url(pyproject)


def _run_setup_cell(monkeypatch, tmp_path, *, colab: bool, pip_returncodes=(0,)):
    """Executes the set-up cell as if decentjax were not installed; returns pip's calls."""
    calls = []
    codes = iter(pip_returncodes)

    def fake_run(cmd, check=False):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=next(codes))

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n == "decentjax" else real_find_spec(n, *a),
    )
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.chdir(tmp_path)  # not a clone
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(notebooks.setup_cell("https://github.com/a/b"), {"__name__": "setup_cell"})
    return calls


def test_setup_cell_outside_colab_installs_nothing_and_never_raises(monkeypatch, tmp_path, capsys):
    assert _run_setup_cell(monkeypatch, tmp_path, colab=False) == []
    assert "pip install git+https://github.com/a/b" in capsys.readouterr().out


def test_setup_cell_on_colab_keeps_the_installed_jax(monkeypatch, tmp_path):
    (call,) = _run_setup_cell(monkeypatch, tmp_path, colab=True)
    assert call[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    assert "git+https://github.com/a/b" in call and call[-2] == "-c"
    with open(call[-1]) as f:
        pins = f.read().split()
    assert pins == [f"jax=={version('jax')}", f"jaxlib=={version('jaxlib')}"]
    # Colab's JAX too old for decentjax: the pinned install fails, JAX is upgraded.
    first, second = _run_setup_cell(monkeypatch, tmp_path, colab=True, pip_returncodes=(1, 0))
    assert first[-2] == "-c" and second[-2:] == ["-U", "jax"]


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
