"""Cite-every-claim answers: reading citations off an answer, counting them against the passages
that hold the evidence, the verification gate, and the four-condition measurement on the real model."""

import re

import numpy as np

from course_utils.safety.citations import (
    CONDITIONS,
    CitedSentence,
    citation_counts,
    citation_messages,
    measure_citations,
    split_cited,
    verify,
)


def test_split_cited_reads_each_sentences_citations_including_one_after_the_full_stop():
    answer = "The dough is ready when the dent fills slowly [2]. Cold yeast works slower [1][3]. It rises. [4]"
    assert split_cited(answer) == [CitedSentence("The dough is ready when the dent fills slowly.", (2,)),
                                   CitedSentence("Cold yeast works slower.", (1, 3))]  # "It rises. [4]" is too short
    assert split_cited("Bread needs warmth. [1]") == [CitedSentence("Bread needs warmth.", (1,))]
    assert split_cited("") == []


def test_counts_tell_uncited_fabricated_wrong_and_right_citations_apart():
    claims = [CitedSentence("a b c", (1,)), CitedSentence("d e f", (2, 7)), CitedSentence("g h i", ())]
    counts = citation_counts(claims, given=3, gold={1})
    assert counts == {"sentences": 3, "uncited": 1, "citations": 3, "fabricated": 1, "wrong": 1, "right": 1}
    closed = citation_counts(claims, given=0, gold=set())  # no passages given: every citation is made up
    assert closed["fabricated"] == closed["citations"] == 3 and closed["right"] == closed["wrong"] == 0


def test_the_gate_keeps_only_sentences_their_cited_passages_support():
    passages = ["the dough rises faster when it is warm", "flour with more protein builds stronger gluten"]

    def support(pairs):
        return np.asarray([float(set(re.findall(r"\w+", c.lower())) <= set(p.split())) for p, c in pairs])

    claims = [CitedSentence("The dough rises faster when warm.", (1,)),  # supported by [1]
              CitedSentence("The dough rises faster when warm.", (2,)),  # wrong passage
              CitedSentence("Flour builds gluten.", (2, 5)),  # one citation made up
              CitedSentence("Flour builds stronger gluten.", ())]  # uncited
    assert verify(claims, passages, support, 0.5) == [claims[0]]
    assert verify([], passages, support, 0.5) == []


def test_messages_number_the_passages_and_carry_the_rule_only_when_asked():
    [with_both] = citation_messages("Why?", ["first  passage\ntext", "second"], instruction=True)
    assert "[1] first passage text\n[2] second" in with_both["content"] and "square brackets" in with_both["content"]
    [bare] = citation_messages("Why?", [], instruction=False)
    assert "Passages" not in bare["content"] and "square brackets" not in bare["content"]


def test_four_conditions_on_the_real_model_add_up(smollm2):
    from course_utils.architecture.transformer import Llama
    from course_utils.context.corpus import chapter_text, load_questions
    from course_utils.models import load_embedder
    from course_utils.safety.claims import support_by_similarity
    from course_utils.serving import LLM

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=256, block_size=16, max_model_len=1024)
    questions = load_questions()[:3]
    texts = {q.chapter: chapter_text(q.chapter) for q in questions}

    def passages_for(question):  # the evidence's own paragraph and a paragraph of another chapter
        q = next(q for q in questions if q.question == question)
        paragraphs = [p for p in texts[q.chapter].split("\n\n") if q.evidence in " ".join(p.split())]
        return [paragraphs[0][:600], "Most home bakers learn that dough does not care about the clock."]

    embedder = load_embedder()
    report = measure_citations(llm, questions, passages_for,
                               lambda pairs: support_by_similarity(pairs, embedder), 0.5, max_tokens=24)
    assert set(report["conditions"]) == {", ".join(c) for c in CONDITIONS} | {"retrieval, instruction, verified"}
    assert report["evidence_retrieved"]["k"] == 3
    for name, row in report["conditions"].items():
        assert row["answers"] == 3
        assert row["uncited"] <= row["sentences"]
        assert row["fabricated"] + row["wrong"] + row["right"] == row["citations"]
        if name.startswith("no retrieval"):
            assert row["fabricated"] == row["citations"]  # nothing was given to cite
    verified = report["conditions"]["retrieval, instruction, verified"]
    assert verified["uncited"] == verified["fabricated"] == 0  # the gate lets neither through
    assert verified["sentences"] <= report["conditions"]["retrieval, instruction"]["sentences"]
