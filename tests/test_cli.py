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


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_lab_passes_every_option_on_to_jupyter(monkeypatch):
    calls = []
    monkeypatch.setattr("course_utils.cli.subprocess.call", lambda cmd, env: calls.append(cmd) or 0)
    assert main(["lab", "--no-browser", "--port", "8890", "--ip", "0.0.0.0"]) == 0
    assert main(["--debug", "lab", "--help"]) == 0
    assert calls[0][-4:] == ["--port", "8890", "--ip", "0.0.0.0"] and calls[0][-5] == "--no-browser"
    assert calls[0][1:3] == ["-m", "jupyterlab"] and calls[1][-1] == "--help"


def test_version_and_serve_help_show_what_they_should(capsys):
    import pytest

    from course_utils.defaults import DEFAULT_MODEL

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("llm-course 0.")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: 8000)" in shown and f"(default: {DEFAULT_MODEL})" in shown and "(default: 256)" in shown


def test_a_busy_port_is_reported_before_the_model_loads(capsys, monkeypatch):
    import socket

    def never(*a, **k):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr("course_utils.serving.llm.LLM", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 1
    assert "choose another port with --port" in _one_line_error(capsys)


def test_an_unknown_model_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    import pytest

    monkeypatch.setattr("course_utils.serving.server.bind_socket", lambda host, port: __import__("socket").socket())
    assert main(["serve", "--model", "no-such-model", "--port", "1"]) == 1
    assert "Embedded models (offline)" in _one_line_error(capsys)
    monkeypatch.setenv("LLM_COURSE_DEBUG", "1")
    with pytest.raises(ValueError, match="Unknown model"):
        main(["serve", "--model", "no-such-model", "--port", "1"])


def test_a_missing_asset_is_one_line_with_the_fetch_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr("course_utils.serving.server.bind_socket", lambda host, port: __import__("socket").socket())
    assert main(["serve", "--port", "1"]) == 1
    assert "llm-course fetch" in _one_line_error(capsys)


def test_an_unexpected_failure_is_one_line_that_asks_for_debug(capsys, monkeypatch):
    def broken(args):
        raise KeyError("x")

    monkeypatch.setattr("course_utils.cli._cmd_doctor", broken)
    assert main(["doctor"]) == 1
    assert "KeyError" in _one_line_error(capsys)


def test_claims_prints_or_writes_the_ledger_page(capsys, tmp_path, monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    assert main(["claims"]) == 0
    assert capsys.readouterr().out.startswith("# The article's claims, checked")
    assert main(["claims", "--write", str(tmp_path / "claims.md")]) == 0
    assert (tmp_path / "claims.md").read_text() == (root / "docs" / "claims.md").read_text()
    monkeypatch.chdir(tmp_path)  # not a course folder: one line saying so
    assert main(["claims"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "course folder" in err[0]
