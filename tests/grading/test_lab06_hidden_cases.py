"""Lab 06's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import assert_hidden_cases_catch

from course_utils.sandbox import Limits

# one plausible mistake per question, each invisible to that question's public cases
MISTAKES = {
    # scaling by alpha / 2: right only for rank 2, the rank of every public case
    "lora": ("    scaling = alpha / a.shape[0]\n", "    scaling = alpha / 2\n"),
    # k and v as wide as q: true without grouped-query attention (Llama-2), wrong for SmolLM2 and Llama-3
    "count": ('    kv = config["num_key_value_heads"] * (d // config["num_attention_heads"])\n', "    kv = d\n"),
    # the textbook formula, which overflows for a large negative margin and gives inf
    "dpo": ("loss = float(np.mean(np.logaddexp(0.0, -margins)))",
            "loss = float(np.mean(-np.log(1 / (1 + np.exp(-margins)))))"),
}


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    assert_hidden_cases_catch("06_fine_tuning_lab.ipynb", MISTAKES, tmp_path,
                              Limits(cell_timeout_s=60, wall_timeout_s=200))
