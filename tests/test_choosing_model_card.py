import pytest
from huggingface_hub import ModelCard

from course_utils.architecture.sizing import parameter_count, published_config
from course_utils.choosing.model_card import (
    MISSING,
    CardAnswers,
    card_form,
    card_problems,
    check_written_card,
    load_answers,
    measured_facts,
    prefilled,
    render_card,
    write_card,
)
from course_utils.cli import main

MODEL = "smollm2-135m-instruct"
ANSWERS = {"intended_use": "Teaching how language models work, on a laptop.",
           "out_of_scope_use": "Any decision about a person; anything that needs correct facts.",
           "limitations": "135M parameters: it gets most multi-step questions wrong.", "contact": "course@example.org"}


def test_prefill_takes_sizes_from_sizing_and_results_from_the_recorded_benchmarks():
    facts = measured_facts(MODEL)
    assert facts["sizes"]["parameters"] == parameter_count(published_config("smollm2-135m"))
    assert any(r.metric_type == "perplexity" for r in facts["eval_results"])
    answers = prefilled(MODEL)
    assert answers.license == "apache-2.0" and "135M parameters" in answers.summary
    assert set(card_problems(answers)) == {"'Intended use' is required", "'Out-of-scope use' is required",
                                           "'Limitations' is required", "'Contact' is required"}
    with pytest.raises(ValueError, match="unknown model 'gpt-7'.*smollm2"):
        measured_facts("gpt-7")


def test_a_rendered_card_round_trips_through_huggingface_hub():
    answers = prefilled(MODEL)
    for name, value in ANSWERS.items():
        setattr(answers, name, value)
    results = measured_facts(MODEL)["eval_results"]
    card = ModelCard(str(render_card(answers, results)))  # parse the written text back
    assert card.data.license == "apache-2.0" and card.data.model_name == MODEL
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        (r.metric_type, r.metric_value) for r in results]
    assert ANSWERS["out_of_scope_use"] in card.text and check_written_card(str(card)) == []
    assert "datasheets in course_utils/data/README.md: course_utils/data/passages.jsonl" in card.text


@pytest.mark.parametrize("change, problem", [
    ({"license": "free"}, "not a Hub licence id"),
    ({"license": "other"}, "needs a license name and a license link"),
    ({"license": "other", "license_name": "x", "license_link": "ftp://x"}, "must be a URL"),
    ({"model_id": "my model"}, "must not contain spaces"),
    ({"contact": "  "}, "'Contact' is required"),
])
def test_card_problems_are_one_clear_line_each(change, problem):
    answers = CardAnswers(**({"model_id": "m", "license": "mit"} | ANSWERS | change))
    assert any(problem in p for p in card_problems(answers))
    with pytest.raises(ValueError, match="not complete"):
        render_card(answers)


def test_a_hand_edited_card_is_checked():
    answers = CardAnswers(model_id="m", license="mit", **ANSWERS)
    text = str(render_card(answers))
    assert check_written_card(text) == []
    assert any("license" in p for p in check_written_card(text.replace("license: mit", "license: free")))
    emptied = text.replace(ANSWERS["limitations"], MISSING)
    assert any("Bias, Risks, and Limitations" in p for p in check_written_card(emptied))
    assert check_written_card("---\nlicense: [unclosed\n---\n# card")[0].startswith("the card's metadata")


def test_the_form_is_filled_and_clicked_like_a_learner_would():
    written = []
    form = card_form(MODEL, on_card=written.append)
    assert form.fields["license"].value == "apache-2.0"
    form.generate.click()  # required fields still empty: the problems are shown, no card
    assert form.card is None and written == []
    for name, value in ANSWERS.items():
        form.fields[name].value = value
    form.generate.click()
    assert form.card is not None and written == [form.card]
    assert check_written_card(str(form.card)) == [] and form.card.data.eval_results


def test_the_command_line_writes_a_valid_card(tmp_path, capsys):
    answers = tmp_path / "answers.yaml"
    answers.write_text("".join(f"{k}: {v!r}\n" for k, v in ANSWERS.items()))
    out = tmp_path / "card.md"
    assert main(["model-card", "--model", MODEL, "--out", str(out), "--answers", str(answers)]) == 0
    assert check_written_card(out.read_text()) == [] and "evaluation result" in capsys.readouterr().out
    answers.write_text("intended_use: x\nfavourite_colour: blue\n")
    assert main(["model-card", "--out", str(out), "--answers", str(answers)]) == 1
    err = capsys.readouterr().err
    assert "unknown field(s) favourite_colour" in err and len(err.strip().splitlines()) == 1
    answers.write_text("intended_use: [unclosed\n")
    assert main(["model-card", "--out", str(out), "--answers", str(answers)]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["model-card", "--out", str(out)]) == 1  # nothing answered: says what is missing
    assert "'Intended use' is required" in capsys.readouterr().err


def test_load_answers_rejects_a_list(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("- one\n- two\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_answers(path)


def test_write_card_refuses_to_write_an_incomplete_card(tmp_path):
    with pytest.raises(ValueError, match="'Contact' is required"):
        write_card(MODEL, tmp_path / "card.md", {k: v for k, v in ANSWERS.items() if k != "contact"})
    assert not (tmp_path / "card.md").exists()
