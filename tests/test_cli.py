import subprocess
import sys

import nbformat

from course_utils.cli import main


def test_doctor_reports_assets_ok(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "torch" in out


def test_fetch_unknown_asset_fails_clearly(capsys):
    assert main(["fetch", "no-such-asset"]) == 1
    assert "Known assets" in capsys.readouterr().err


def test_fetch_is_idempotent(capsys):
    assert main(["fetch"]) == 0
    assert capsys.readouterr().out.count(": ok in") == 3


def test_run_missing_notebook(capsys, tmp_path):
    assert main(["run", str(tmp_path / "nope.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_run_prints_a_table(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("QUICK = False"), nbformat.v4.new_code_cell("assert QUICK is True")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, tmp_path / "00_probe.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils.cli", "run", str(tmp_path / "00_probe.ipynb"), "--out",
         str(tmp_path / "build")],
        capture_output=True, text=True, timeout=180,
    )
    # QUICK mode is the notebook's own default, so QUICK=False in the cell makes the assert fail
    assert proc.returncode == 1
    assert "00_probe.ipynb  failed" in proc.stdout and "0 passed, 1 failed" in proc.stdout
