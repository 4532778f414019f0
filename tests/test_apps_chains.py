"""Chains (course_utils/apps/chains.py): items, step validation, the chain wiring and its scoring."""

import json
import re
from types import SimpleNamespace

import jsonschema
import pytest

from course_utils.apps.chains import (
    ChainRun,
    CodeAnswer,
    Critique,
    Draft,
    StepRecord,
    SubQuestions,
    Summary,
    chain_items,
    measure_chains,
    run_chain,
    step_table,
)
from course_utils.tasks import _NEGATIVE


def test_passage_items_hold_both_facts_once_and_are_reproducible():
    items = chain_items("passage", 12, seed=3)
    assert items == chain_items("passage", 12, seed=3) and items != chain_items("passage", 12, seed=4)
    for item in items:
        assert len(set(item.names)) == 2 and len(set(item.codes)) == 2
        for name, code in zip(item.names, item.codes, strict=True):
            assert re.fullmatch(r"[0-9]{4}", code) and item.document.count(f"{name}'s locker code is {code}.") == 1
    reviews = chain_items("review", 10)
    assert {r.label for r in reviews} <= {"positive", "negative"} and all(r.document for r in reviews)
    with pytest.raises(ValueError, match="unknown chain task"):
        chain_items("poems", 3)


@pytest.mark.parametrize("model, reply", [
    (Summary, {"summary": "short"}), (Summary, {"summary": "x" * 201}), (Summary, {"summary": "ok", "extra": 1}),
    (CodeAnswer, {"code": "0412"}), (CodeAnswer, {"code": "412"}), (CodeAnswer, {"code": "04125"}), (CodeAnswer, {}),
    (SubQuestions, {"sub_questions": ["What is Ana's locker code?", "What is Ben's locker code?"]}),
    (SubQuestions, {"sub_questions": ["What is Ana's locker code?"]}),
    (SubQuestions, {"sub_questions": ["What are Ana and Ben's codes?", "What is Ben's locker code?"]}),
    (Draft, {"label": "negative", "reason": "rude"}), (Draft, {"label": "neutral", "reason": "meh"}),
    (Critique, {"verdict": "agree"}), (Critique, {"verdict": "maybe"}),
])
def test_pydantic_validation_agrees_with_jsonschema_on_the_schema_the_grammar_enforces(model, reply):
    """The engine constrains decoding to ``model_json_schema()``; pydantic validates the reply. The
    two must accept exactly the same replies, or a constrained reply could fail validation."""
    try:
        jsonschema.validate(reply, model.model_json_schema())
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    try:
        model.model_validate_json(json.dumps(reply))
        pydantic_ok = True
    except ValueError:
        pydantic_ok = False
    assert schema_ok == pydantic_ok


class ScriptedModel:
    """A stand-in for the course LLM that answers each step by rule, from the prompt it is shown:
    summaries copy the passage's first 200 characters (so they keep a fact only if it comes early),
    code questions are answered exactly when the fact is in the prompt, sub-questions are right,
    drafts always say "positive", and the critic can tell a negative review only when shown it."""

    def __init__(self):
        self.engine = SimpleNamespace(tokenizer=SimpleNamespace(
            apply_chat_template=lambda messages, **_: messages[-1]["content"]))
        self.calls = 0

    def _reply(self, prompt: str, schema: dict) -> dict:
        title = schema["title"]
        if title == "Summary":
            return {"summary": prompt.split("\n\n", 1)[1][:200]}
        if title == "CodeAnswer":
            name = re.findall(r"What is (\w+)'s locker code\?", prompt)[-1]
            found = re.search(rf"{name}'s locker code is ([0-9]{{4}})", prompt)
            return {"code": found.group(1) if found else "0000"}
        if title == "SubQuestions":
            names = re.search(r"codes of (\w+) and (\w+)\?", prompt).groups()
            return {"sub_questions": [f"What is {n}'s locker code?" for n in names]}
        if title == "Codes":
            return {name: re.search(rf"{name}'s locker code is ([0-9]{{4}})", prompt).group(1)
                    for name in schema["properties"]}
        if title in ("Draft", "Label"):
            return {"label": "positive", "reason": "no reason given"} if title == "Draft" else {"label": "positive"}
        negative = any(phrase in prompt for phrase in _NEGATIVE)
        return {"verdict": "disagree" if "Review:" in prompt and negative else "agree"}

    def generate(self, texts, params):
        self.calls += 1
        outs = []
        for text, p in zip(texts, params, strict=True):
            reply = json.dumps(self._reply(text, p.structured_outputs.json))
            outs.append(SimpleNamespace(prompt_token_ids=[0] * len(text.split()),
                                        outputs=[SimpleNamespace(text=reply, token_ids=[0] * 5)]))
        return outs


def test_an_early_summary_loses_late_facts_and_only_the_original_input_recovers_them():
    items = chain_items("passage", 30, seed=1)
    early = [item.codes[0] in item.document[:200] for item in items]
    plain = run_chain(ScriptedModel(), "summarise-then-answer", items)
    kept = run_chain(ScriptedModel(), "summarise-then-answer", items, keep_original=True)
    assert [r.right for r in plain.steps["summarise"]] == early
    assert plain.final == early and all(kept.final)  # nothing downstream can recover what the summary dropped
    table = step_table(plain)
    assert table["steps"]["answer"]["given_earlier_right"]["rate"] == 1.0
    assert table["every_step_right"]["k"] == sum(early) and table["recovered_after_a_wrong_step"]["k"] == 0
    assert step_table(kept)["recovered_after_a_wrong_step"]["k"] == len(items) - sum(early)
    assert sum(kept.tokens()) > sum(plain.tokens())  # the original input costs its tokens at every step


def test_content_validation_sends_a_summary_without_the_fact_to_the_one_call_answer():
    items = chain_items("passage", 20, seed=2)
    model = ScriptedModel()
    report = measure_chains(model, items, chain_items("review", 6))
    validated = next(t for t in report["tables"]
                     if t["chain"] == "summarise-then-answer" and t["variant"].endswith("validated"))
    plain = next(t for t in report["tables"]
                 if t["chain"] == "summarise-then-answer" and t["variant"] == "previous output only")
    assert validated["fell_back"] == plain["end_to_end"]["n"] - plain["end_to_end"]["k"] > 0
    assert validated["end_to_end"]["rate"] == 1.0  # the scripted one-call answer is always right
    advice = report["article_advice"]
    assert advice["keeping the original input at every step"]["summarise-then-answer"] == "helps"
    assert advice["validating intermediate outputs (fallback to one call)"]["decompose-then-solve"] == \
        "no significant difference"  # the scripted decomposition is never wrong, so nothing falls back
    with pytest.raises(ValueError, match="pass its records"):
        run_chain(model, "summarise-then-answer", items, validate_content=True)


def test_decompose_then_solve_joins_answers_by_person_and_a_critic_needs_the_review():
    passages, reviews = chain_items("passage", 8), chain_items("review", 40, seed=5)
    decomposed = run_chain(ScriptedModel(), "decompose-then-solve", passages)
    table = step_table(decomposed)
    assert all(decomposed.final) and table["every_step_right"]["rate"] == 1.0 and not table["below_weakest_step"]
    blind = run_chain(ScriptedModel(), "draft-then-critique", reviews)
    seeing = run_chain(ScriptedModel(), "draft-then-critique", reviews, keep_original=True)
    positive = [r.label == "positive" for r in reviews]
    assert blind.final == positive and all(seeing.final)
    with pytest.raises(ValueError, match="no content check"):
        run_chain(ScriptedModel(), "draft-then-critique", reviews, validate_content=True)
    with pytest.raises(ValueError, match="unknown chain"):
        run_chain(ScriptedModel(), "plan-then-pray", reviews)


def test_a_reply_that_fails_validation_stops_its_chain_and_is_counted_invalid():
    class CutOff(ScriptedModel):
        def generate(self, texts, params):
            outs = super().generate(texts, params)
            for out in outs:
                if out.outputs[0].text.startswith('{"summary"'):
                    out.outputs[0].text = out.outputs[0].text[:20]  # as if max_tokens cut it
            return outs

    items = chain_items("passage", 5)
    run = run_chain(CutOff(), "summarise-then-answer", items, keep_original=True)
    table = step_table(run)
    assert table["steps"]["summarise"]["invalid"] == 5 and not any(run.final)
    assert all(r.tokens == 0 for r in run.steps["answer"])  # the next step never ran on a rejected reply


def test_the_chains_run_on_the_real_model_with_every_reply_valid(smollm2):
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=256, block_size=16, max_model_len=1024)
    items = chain_items("passage", 2, seed=7)
    for chain in ("summarise-then-answer", "decompose-then-solve"):
        table = step_table(run_chain(llm, chain, items, keep_original=True))
        assert all(step["invalid"] == 0 for step in table["steps"].values()), table
        assert table["tokens_per_item"] > 300  # the passage is in the prompt of every step that reads it


def test_two_coin_flip_steps_compound_below_the_weaker_one_and_recovery_is_counted():
    def records(flags):
        return [StepRecord(None, flag, 10) for flag in flags]

    steps = {"first": records([True, True, False, False]), "second": records([True, False, True, False])}
    table = step_table(ChainRun("x", "plain", steps, final=[True, False, False, False], fell_back=[False] * 4))
    assert table["steps"]["first"]["given_earlier_right"]["rate"] == 0.5
    assert table["steps"]["second"]["given_earlier_right"] == {"rate": 0.5, "k": 1, "n": 2, "ci95": [0.0945, 0.9055]}
    assert table["every_step_right"]["k"] == 1 and table["end_to_end"]["rate"] == 0.25 and table["below_weakest_step"]
    assert table["recovered_after_a_wrong_step"]["k"] == 0 and table["tokens_per_item"] == 20
    saved = step_table(ChainRun("x", "plain", steps, final=[True, False, True, False], fell_back=[False] * 4))
    assert saved["recovered_after_a_wrong_step"]["k"] == 1 and not saved["below_weakest_step"]
