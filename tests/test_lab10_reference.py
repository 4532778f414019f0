"""Lab 10's reference solution agrees with course_utils' sizing, tier pricing and break-even."""

import math
import random

import pytest
from lab_solutions import solution_namespace

from course_utils.architecture import sizing
from course_utils.choosing.costs import SECONDS_PER_MONTH, SelfHosting, Traffic, api_monthly_usd, break_even, load_gpus
from course_utils.tokens import call_cost, load_prices


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("10_choosing_and_documenting_models_lab.ipynb", {"math": math})


@pytest.mark.parametrize("name", [n for n, c in sizing.PUBLISHED_CONFIGS.items() if c["model_type"] != "gpt2"])
def test_the_lab_counts_every_published_llama_family_config_as_sizing_does(lab, name):
    config = sizing.published_config(name)
    vocab, d, layers, heads, kv, _, ffn = sizing.config_shape(config)
    total, used = sizing.experts(config)
    stored, active = lab["moe_parameters"](vocab, d, layers, heads, kv, ffn, total, used,
                                           bool(config.tie_word_embeddings))
    assert [stored, active] == [sizing.parameter_count(config), sizing.active_parameter_count(config)]


def test_the_lab_bills_each_prompt_at_the_tier_the_course_picks(lab):
    history = load_prices(history=True)
    rng = random.Random(0)
    for model in sorted({p.model for p in history}):
        for as_of in sorted({p.as_of for p in history if p.model == model}):
            latest = {p.tier: p for p in history if p.model == model and p.as_of <= as_of}
            tiers = [[p.max_prompt_tokens, p.input_usd_per_m, p.output_usd_per_m] for p in latest.values()]
            window = max(p.context_window for p in latest.values())
            for prompt in [0, window, window + 1, *(rng.randint(1, window) for _ in range(5))]:
                out = rng.randint(0, 2000)
                expected = None if prompt > window else call_cost(model, prompt, out, as_of=as_of)
                got = lab["call_cost"](tiers, prompt, out)
                assert got == pytest.approx(expected, rel=1e-12) if expected is not None else got is None


def test_the_lab_break_even_matches_the_course_cost_model(lab):
    rng = random.Random(1)
    gpu = load_gpus()[0]
    price = next(p for p in load_prices() if p.model == "gpt-4o")
    outcomes = set()
    for _ in range(200):
        shape = Traffic(1, rng.randint(100, 4000), rng.randint(10, 1000))
        hosting = SelfHosting(gpu, rng.randint(1, 4), rng.uniform(50, 5000), rng.uniform(500, 50_000),
                              utilisation=rng.uniform(0.1, 1), engineering_usd_per_month=rng.choice([0, 3000, 20000]))
        a = api_monthly_usd(shape, price)
        c = SECONDS_PER_MONTH * hosting.utilisation / hosting.replica_seconds(shape)
        found = break_even(shape, price, hosting)
        got = lab["break_even"](a, c, hosting.replica_usd_per_month, hosting.engineering_usd_per_month)
        outcomes.add(found is None)
        if found is None:
            assert got is None
        else:
            assert got == pytest.approx(found["requests_per_day"], rel=1e-9)
    assert outcomes == {True, False}  # both a crossing and no crossing were tried
