import pytest

from course_utils.architecture import sizing
from course_utils.choosing.landscape import audit_article_table, landscape, load_models
from course_utils.tokens import load_prices


def test_every_model_row_is_dated_and_sourced_and_every_priced_model_is_listed():
    models = {m.model: m for m in load_models()}
    assert len(models) >= 10
    for m in models.values():
        assert len(m.released) == 7 and m.released[4] == "-" and m.source and m.context_window > 0
    for p in load_prices(history=True):
        assert p.model in models, f"{p.model} is priced but not in models.csv"
    for p in load_prices():  # the current rows state the model's window as models.csv does
        assert p.context_window == models[p.model].context_window, p


@pytest.mark.parametrize("model", [m.model for m in load_models() if m.sizing_config])
def test_published_sizes_agree_with_the_sizes_computed_from_the_config(model):
    info = next(m for m in load_models() if m.model == model)
    config = sizing.published_config(info.sizing_config)
    assert sizing.parameter_count(config) / 1e9 == pytest.approx(info.total_params_b, rel=0.01)
    assert sizing.active_parameter_count(config) / 1e9 == pytest.approx(info.active_params_b, rel=0.01)


def test_the_landscape_puts_prices_beside_the_facts():
    rows = {r["model"]: r for r in landscape()}
    assert rows["gpt-4o"]["$/M in"] == 2.50 and rows["gpt-4o"]["open weights"] == "no"
    assert rows["mixtral-8x7b"]["$/M in"] is None and rows["mixtral-8x7b"]["active (B)"] < rows["mixtral-8x7b"][
        "params (B)"]


def test_the_audit_finds_the_three_errors_of_the_articles_table_and_passes_the_right_row():
    report = {r["model"]: r["problems"] for r in audit_article_table("2025-06")}
    assert report["claude-3.5-sonnet"] == []
    assert any("2024-05 price; from 2024-10" in p for p in report["gpt-4o"])
    assert any("applies to prompts up to 128,000 tokens" in p for p in report["gemini-1.5-pro"])
    assert any("128,000-token window, not 32,000" in p for p in report["mistral-large"])
    # dated before the price cuts, the same table would only be wrong about Gemini's long prompts and Mistral's window
    early = {r["model"]: r["problems"] for r in audit_article_table("2024-09")}
    assert early["gpt-4o"] == []


MODEL_HEADER = ("model,provider,released,context_window,open_weights,license,total_params_b,active_params_b,"
                "sizing_config,source\n")


@pytest.mark.parametrize("rows, message", [
    ("m,p,2024,1000,yes,x,1,1,,s\n", "line 2: released must be YYYY-MM"),
    ("m,p,2024-01,1000,yes,x,1,1,,\n", "needs a source"),
    ("m,p,2024-01,1000,maybe,x,1,1,,s\n", "open_weights must be one of"),
    ("m,p,2024-01,1000,yes,x,1,2,,s\n", "0 < active <= total"),
    ("m,p,2024-01,1000,yes,x,1,1,,s\nm,p,2024-01,1000,yes,x,1,1,,s\n", "listed twice: m"),
    ("m,p,2024-01,lots,yes,x,1,1,,s\n", "context_window must be an integer"),
])
def test_a_broken_model_file_gets_a_clear_error(tmp_path, rows, message):
    bad = tmp_path / "models.csv"
    bad.write_text(MODEL_HEADER + rows)
    with pytest.raises(ValueError, match=message):
        load_models(bad)


def test_the_articles_benchmark_scores_are_quoted_and_point_at_chapter_3():
    import json
    from pathlib import Path

    from course_utils.choosing.landscape import article_benchmarks

    chapter3 = Path(__file__).resolve().parents[1] / "notebooks" / "03_icl_and_cot.ipynb"
    headings = {line for cell in json.loads(chapter3.read_text())["cells"] if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("#")}
    rows = article_benchmarks()
    assert [r["benchmark"] for r in rows] == ["MMLU", "HumanEval", "GSM8K", "MATH", "HellaSwag", "TruthfulQA",
                                              "Chatbot Arena"]
    for row in rows:
        assert row["status"] == "quoted, not reproduced here" and row["quoted_low"] <= row["quoted_high"]
        assert row["course_section"] in headings, f"{row['benchmark']}: no chapter 3 heading {row['course_section']!r}"
