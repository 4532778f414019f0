import math

import pytest

from course_utils.architecture.sizing import published_config
from course_utils.choosing.costs import (
    DAYS_PER_MONTH,
    SelfHosting,
    Traffic,
    api_monthly_usd,
    break_even,
    load_gpus,
    months_between,
    price_change,
    replicas_needed,
    roofline_replica,
    self_host_monthly_usd,
    tokens_per_dollar,
)
from course_utils.serving.roofline import roofline_tokens_per_s
from course_utils.tokens import find_price

H100 = next(g for g in load_gpus() if g.gpu.startswith("H100") and g.usd_per_gpu_hour < 5)


def hosting(**kw):
    fields = dict(gpu=H100, gpus_per_replica=1, decode_tokens_per_s=1000.0, prefill_tokens_per_s=10_000.0,
                  utilisation=0.5, engineering_usd_per_month=3000.0)
    return SelfHosting(**(fields | kw))


def test_api_cost_is_tokens_times_rates():
    shape = Traffic(10_000, input_tokens=500, output_tokens=200)
    mini = find_price("gpt-4o-mini")
    expected = 10_000 * DAYS_PER_MONTH * (500 * 0.15 + 200 * 0.60) / 1e6
    assert api_monthly_usd(shape, mini) == pytest.approx(expected, rel=1e-6)
    per_dollar = 700 / (500 * 0.15 + 200 * 0.60) * 1e6
    assert tokens_per_dollar(shape, api_monthly_usd(shape, mini)) == pytest.approx(per_dollar, rel=1e-6)


def test_self_hosting_rents_whole_replicas_sized_for_the_utilisation():
    h = hosting()
    one_replica_rps = 0.5 / (200 / 1000 + 500 / 10_000)  # requests a second at half of one replica's capacity
    per_day = one_replica_rps * 86_400
    assert replicas_needed(Traffic(per_day * 0.99, 500, 200), h) == 1
    assert replicas_needed(Traffic(per_day * 1.01, 500, 200), h) == 2
    assert replicas_needed(Traffic(0, 500, 200), h) == 1  # the service is up even when idle
    month = H100.usd_per_gpu_hour * DAYS_PER_MONTH * 24
    assert self_host_monthly_usd(Traffic(per_day * 1.01, 500, 200), h) == pytest.approx(2 * month + 3000)


@pytest.mark.parametrize("engineering, utilisation", [(0, 0.5), (3000, 0.5), (3000, 0.2), (20_000, 0.9)])
def test_break_even_is_where_a_fine_scan_first_finds_self_hosting_no_dearer(engineering, utilisation):
    shape, price = Traffic(1, 800, 250), find_price("gpt-4o")
    h = hosting(engineering_usd_per_month=engineering, utilisation=utilisation)
    found = break_even(shape, price, h)
    assert found is not None
    step = found["requests_per_day"] / 2000
    volumes = [step * i for i in range(1, 4001)]
    first = next(v for v in volumes if self_host_monthly_usd(shape.scaled(v), h) <= api_monthly_usd(shape.scaled(v),
                                                                                                     price) + 1e-6)
    assert first == pytest.approx(found["requests_per_day"], abs=step * 1.01)
    at = shape.scaled(found["requests_per_day"] * 1.0001)
    assert self_host_monthly_usd(at, h) <= api_monthly_usd(at, price) + 1e-6
    assert found["api_usd_per_month"] == pytest.approx(api_monthly_usd(shape.scaled(found["requests_per_day"]), price),
                                                       rel=1e-6)


def test_no_break_even_when_a_replica_costs_more_than_the_api_charges_for_its_traffic():
    slow = hosting(decode_tokens_per_s=1.0, prefill_tokens_per_s=10.0)
    assert break_even(Traffic(1, 800, 250), find_price("gpt-4o-mini"), slow) is None


def test_roofline_replica_counts_gpus_by_memory_and_speed_by_the_roofline():
    config = published_config("llama-3.1-70b")
    replica = roofline_replica(config, H100, bits=16, batch=64, efficiency=0.5)
    assert replica.gpus_per_replica == 3  # 141 GB of bf16 weights, 70% of 80 GB per GPU for them
    expected = roofline_tokens_per_s(64, 70.55e9, 141.1e9, 3 * 989e12, 3 * 3.35e12) * 0.5
    assert replica.decode_tokens_per_s == pytest.approx(expected, rel=0.01)

    def per_gpu(name, batch):
        replica = roofline_replica(published_config(name), H100, batch=batch)
        return replica.decode_tokens_per_s / replica.gpus_per_replica

    # one sequence: a step reads every weight, so Mixtral is as slow per GPU as its 46.7B parameters make it
    assert per_gpu("mixtral-8x7b", 1) / per_gpu("llama-3.1-70b", 1) == pytest.approx(70.55 / 46.70, rel=0.01)
    # far past the knee a step is compute-bound, and Mixtral computes with 12.9B of them
    assert per_gpu("mixtral-8x7b", 100_000) / per_gpu("llama-3.1-70b", 100_000) == pytest.approx(70.55 / 12.88,
                                                                                                rel=0.01)
    with pytest.raises(ValueError, match="efficiency"):
        roofline_replica(config, H100, efficiency=0)


def test_price_change_and_months():
    gpt4, gpt4o = find_price("gpt-4", as_of="2023-03"), find_price("gpt-4o", as_of="2025-03")
    assert months_between(gpt4.as_of, "2025-03") == 24
    blended_before, blended_after = 0.75 * 30 + 0.25 * 60, 0.75 * 2.5 + 0.25 * 10
    assert price_change(gpt4, gpt4o) == pytest.approx(blended_after / blended_before - 1)
    with pytest.raises(ValueError, match="free"):
        price_change(find_price("smollm2-135m-instruct"), gpt4o)


def test_bad_assumptions_are_explained():
    with pytest.raises(ValueError, match="utilisation must be in"):
        hosting(utilisation=0)
    with pytest.raises(ValueError, match=">= 0"):
        Traffic(-1, 10, 10)
    assert math.isfinite(self_host_monthly_usd(Traffic(1e6, 500, 200), hosting()))


def test_published_throughputs_are_dated_and_sourced_and_make_a_replica():
    from course_utils.choosing.costs import measured_replica, published_throughput

    rows = published_throughput()
    assert rows and all(r["source"].startswith("http") and len(r["as_of"]) == 7 for r in rows)
    best = max(rows, key=lambda r: r["output_tokens_per_s"])
    replica = measured_replica(H100, best["output_tokens_per_s"], utilisation=0.5)
    shape = Traffic(1, 800, 250)
    assert replica.replica_seconds(shape) == pytest.approx(DAYS_PER_MONTH * 250 / best["output_tokens_per_s"])
    # a measured replica is slower than the roofline's bound for the same model and GPU
    bound = roofline_replica(published_config("llama-3.1-8b"), H100, batch=best["concurrency"], efficiency=1.0)
    assert best["output_tokens_per_s"] < bound.decode_tokens_per_s


def test_a_broken_throughput_file_is_explained(tmp_path):
    from course_utils.choosing.costs import published_throughput

    bad = tmp_path / "t.csv"
    bad.write_text("model,gpu,engine,precision,concurrency,output_tokens_per_s,workload,as_of,source\n"
                   "m,g,e,p,four,1,w,2026-01,https://x\n")
    with pytest.raises(ValueError, match="line 2: concurrency must be an integer"):
        published_throughput(bad)
