"""Claims and support scores (course_utils/safety/claims.py)."""

import re

import numpy as np
import pytest
import torch

from course_utils.safety.claims import KINDS, Claim, claim_set, judge_scores, score_report, similarity_scores


def _context_sentences(claim):
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", claim.context)]


def test_the_set_is_large_reproducible_and_labelled_by_construction():
    claims = claim_set(seed=0)
    assert len(claims) >= 150 and claims == claim_set(seed=0) and claims != claim_set(seed=1)
    assert {c.kind for c in claims} == set(KINDS)
    for c in claims:
        assert c.label == KINDS[c.kind]
        sentences = _context_sentences(c)
        if c.kind == "verbatim":
            assert c.claim in sentences
        if c.kind == "main_clause":
            assert c.claim.rstrip(".").lower()[1:] in c.context.lower()
        if c.label != "supported":
            assert c.claim not in sentences  # a changed or foreign sentence is never in the context as is


def test_similarity_scores_a_verbatim_claim_at_one_and_a_foreign_one_lower():
    from course_utils.models import load_embedder

    claims = claim_set(seed=0)
    picked = [next(c for c in claims if c.kind == kind) for kind in ("verbatim", "other_passage")]
    verbatim, foreign = similarity_scores(picked, load_embedder())
    assert verbatim == pytest.approx(1.0, abs=1e-4) and foreign < 0.9


def test_the_batched_judge_equals_one_prompt_at_a_time(smollm2):
    """Left padding must not change the judge's answer: each batched score equals the same prompt
    run alone, through the model with no padding at all."""
    model, tokenizer = smollm2
    claims = claim_set(seed=0)[:3]
    side = tokenizer.padding_side
    batched = judge_scores(claims, model, tokenizer, batch_size=3)
    assert tokenizer.padding_side == side  # the judge puts the tokenizer back as it found it
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    for claim, score in zip(claims, batched, strict=True):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Context: {claim.context}\n\nClaim: {claim.claim}\n\nDoes the context "
                                         "support the claim? Answer yes or no."}], tokenize=False,
            add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(model(**ids).logits[0, -1].float(), dim=-1)
        assert score == pytest.approx(float(logp[yes] - logp[no]), abs=2e-3)


def test_score_report_reads_perfect_and_useless_scores_for_what_they_are():
    claims = [Claim("ctx", f"c{i}", kind, KINDS[kind]) for i, kind in enumerate(list(KINDS) * 10)]
    truth = np.asarray([c.label == "supported" for c in claims], dtype=float)
    perfect = score_report(claims, truth)
    assert perfect["auc"]["auc"] == 1.0 and perfect["precision"] == perfect["recall"] == 1.0
    assert perfect["flagged_by_kind"].get("verbatim", {"k": 0})["k"] == 0
    assert perfect["precision_rate"]["rate"] == perfect["precision"] and perfect["recall_rate"]["ci95"][1] == 1.0
    noise = score_report(claims, np.random.default_rng(0).random(len(claims)))
    assert noise["auc"]["ci95"][0] < 0.5 < noise["auc"]["ci95"][1]


def _tiny_nli_folder(folder, id2label):
    """A randomly initialised BERT cross-encoder with MiniLM's tokenizer, saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from course_utils import assets

    tokenizer = AutoTokenizer.from_pretrained(assets.asset_path("all-minilm-l6-v2").parent)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=len(id2label), id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_nli_scores_read_the_entailment_column_batched_as_one_at_a_time(tmp_path):
    import torch

    from course_utils.models import load_model
    from course_utils.safety.claims import nli_scores

    folder = _tiny_nli_folder(tmp_path / "nli", {0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"})
    model, tokenizer = load_model(folder, device="cpu", head="sequence-classification")
    pairs = [("The dough rises faster when it is warm.", "Warm dough rises faster."),
             ("A loaf that rose in two hours in July can take five in January.", "Bread rises in winter."),
             ("Short.", "A much longer hypothesis that makes the batch need padding on this row.")]
    batched = nli_scores(pairs, model, tokenizer, batch_size=3)
    for (premise, hypothesis), score in zip(pairs, batched, strict=True):
        with torch.no_grad():
            logits = model(**tokenizer(premise, hypothesis, return_tensors="pt")).logits
        assert score == pytest.approx(float(torch.softmax(logits, -1)[0, 1]), abs=1e-5)
    assert batched.shape == (3,) and np.all((batched > 0) & (batched < 1))

    other = _tiny_nli_folder(tmp_path / "sentiment", {0: "negative", 1: "positive"})
    model, tokenizer = load_model(other, device="cpu", head="sequence-classification")
    with pytest.raises(ValueError, match="no 'entailment' label"):
        nli_scores(pairs, model, tokenizer)
    with pytest.raises(ValueError, match="head must be one of"):
        load_model(other, device="cpu", head="seq2seq")
