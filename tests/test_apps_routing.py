"""Routing: the workload, the out-of-fold router, the policies' arithmetic, and both paths live."""

import numpy as np
import pytest

from course_utils.apps.routing import PathOutcome, compare_policies, policy, route_items, router_scores, run_paths


def test_the_workload_mixes_both_tasks_reproducibly():
    items = route_items(10, seed=3)
    assert len(items) == 20 and sum(i.task == "sentiment" for i in items) == 10
    assert items == route_items(10, seed=3) and items != route_items(10, seed=4)
    assert all(isinstance(i.expected, int) for i in items if i.task == "arithmetic")


def test_the_router_learns_a_separable_rule_and_cannot_learn_noise():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 16))
    rule = list(embeddings[:, 0] > 0.3)  # "needs the expensive path" is written in one direction
    scores = router_scores(embeddings, rule)
    accuracy = np.mean((scores >= 0.5) == np.array(rule))
    assert accuracy > 0.9
    noise = list(rng.random(200) < 0.3)  # labels unrelated to the embeddings: out-of-fold scores cannot know them
    guessed = np.mean((router_scores(embeddings, noise) >= 0.5) == np.array(noise))
    assert guessed < 0.75  # a router scored on its own training labels would look far better
    assert np.all(router_scores(embeddings, [False] * 200) == 0.0)  # nothing to learn: never route up


def test_policies_add_up_and_the_claim_is_judged_from_the_figures():
    cheap = [PathOutcome(c, 10, 0.1) for c in (True, False, False, True)]
    expensive = [PathOutcome(c, 50, 0.5) for c in (True, True, False, False)]
    outcomes = {"cheap": cheap, "expensive": expensive}
    mixed = policy(outcomes, [False, True, False, False])
    assert mixed["accuracy"].k == 3 and mixed["tokens"] == pytest.approx(20) and mixed["share_expensive"] == 0.25
    report = compare_policies(outcomes, np.array([0.1, 0.9, 0.2, 0.3]), [False, True, False, False])
    assert report["policies"]["router"]["accuracy"]["k"] == 3 == report["policies"]["oracle"]["accuracy"]["k"]
    assert report["token_saving_vs_expensive"] == pytest.approx(1 - 20 / 50)
    assert report["article_claim_holds"] and "holds here" in report["verdict"]  # 60% saving, accuracy up
    hard = {"cheap": [PathOutcome(False, 10, 0.1)] * 4, "expensive": [PathOutcome(True, 50, 0.5)] * 4}
    lazy = compare_policies(hard, np.zeros(4), [True] * 4)  # a router that never routes up, where it must
    assert lazy["accuracy_change_vs_expensive"] == -1.0 and not lazy["article_claim_holds"]
    assert "does not hold" in lazy["verdict"] and lazy["tests"]["router vs always expensive"]["other_only"] == 4


def test_both_paths_run_live_and_the_cheap_answers_are_well_formed(smollm2):
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=128, block_size=16, max_model_len=512)
    items = route_items(3, seed=1)
    outcomes = run_paths(llm, items, max_tokens=32)
    assert set(outcomes) == {"cheap", "expensive"} and all(len(v) == len(items) for v in outcomes.values())
    for cheap, expensive in zip(outcomes["cheap"], outcomes["expensive"], strict=True):
        assert cheap.tokens < expensive.tokens  # the expensive path always carries more context
        assert cheap.latency_s > 0 and expensive.latency_s > 0


def test_with_a_second_model_the_expensive_path_is_the_cheap_prompt_on_that_model(smollm2):
    """The GPU route between two model sizes, checked on CPU with the same model twice: the
    expensive path then asks exactly what the cheap one asks, so every outcome agrees."""
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=128, block_size=16, max_model_len=512)
    items = route_items(2, seed=2)
    outcomes = run_paths(llm, items, max_tokens=16, expensive_llm=llm)
    assert [(o.correct, o.tokens) for o in outcomes["cheap"]] == [(o.correct, o.tokens) for o in outcomes["expensive"]]
