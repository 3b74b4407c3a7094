"""The library imports as ``decentjax``; a user's ``models.py`` or ``core/`` cannot shadow it."""

import subprocess
import sys


def test_decentjax_imports_from_a_folder_with_its_own_models_and_core(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("raise RuntimeError('the user core')\n")
    (tmp_path / "models.py").write_text("raise RuntimeError('the user models.py')\n")
    (tmp_path / "algos.py").write_text("raise RuntimeError('the user algos.py')\n")
    code = (
        "import decentjax\n"
        "from decentjax import algos, core, models\n"
        "from decentjax.launch import train\n"
        "from decentjax.core import topology\n"
        "assert callable(algos.dsgd) and callable(models.cnn)\n"
        "assert callable(train.train_and_evaluate)\n"
        "assert topology.ring(4).shape == (4, 4)\n"
        "print(decentjax.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0.1.0"
