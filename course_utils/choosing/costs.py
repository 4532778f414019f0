"""API or self-hosting, computed: monthly cost of a traffic profile both ways, and where they cross.

An API bills tokens: ``input x rate_in + output x rate_out``, linear in traffic. Self-hosting bills
GPU hours whether they are busy or not, plus the engineers who keep the service up: a step
function of traffic (one more replica each time the current ones are full) on top of a fixed cost.
So at low volume the API is cheaper, and past some volume self-hosting is, if it ever is: that is
the break-even :func:`break_even` finds, exactly, by walking the steps.

Every assumption is a parameter: the GPU's hourly price (``data/gpu_prices.csv``, dated), the
tokens per second a replica sustains (:func:`roofline_replica` derives them from chapter 4's
roofline and an efficiency factor; a measured figure can be passed instead), the utilisation you
can plan for, and the engineering cost per month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from course_utils.architecture.sizing import active_parameter_count, weight_bytes
from course_utils.serving.roofline import roofline_tokens_per_s
from course_utils.tables import read_csv_rows
from course_utils.tokens import Price

__all__ = ["DAYS_PER_MONTH", "GPU_PRICES_FILE", "PUBLISHED_THROUGHPUT_FILE", "SECONDS_PER_MONTH", "Gpu",
           "SelfHosting", "Traffic", "api_monthly_usd", "blended_usd_per_m", "break_even", "load_gpus",
           "measured_replica", "months_between", "price_change", "published_throughput", "replicas_needed",
           "roofline_replica", "self_host_monthly_usd", "tokens_per_dollar"]

DAYS_PER_MONTH = 365.25 / 12
SECONDS_PER_MONTH = DAYS_PER_MONTH * 24 * 3600
GPU_PRICES_FILE = Path(__file__).resolve().parent.parent / "data" / "gpu_prices.csv"
PUBLISHED_THROUGHPUT_FILE = GPU_PRICES_FILE.with_name("published_throughput.csv")


@dataclass(frozen=True)
class Traffic:
    """A traffic profile: requests a day and the mean input and output tokens of one request."""

    requests_per_day: float
    input_tokens: float
    output_tokens: float

    def __post_init__(self):
        if min(self.requests_per_day, self.input_tokens, self.output_tokens) < 0:
            raise ValueError(f"requests and token counts must be >= 0, got {self}")

    def monthly_tokens(self) -> tuple[float, float]:
        """(input, output) tokens in an average month."""
        requests = self.requests_per_day * DAYS_PER_MONTH
        return requests * self.input_tokens, requests * self.output_tokens

    def scaled(self, requests_per_day: float) -> Traffic:
        """The same request shape at another volume."""
        return replace(self, requests_per_day=requests_per_day)


def api_monthly_usd(traffic: Traffic, price: Price) -> float:
    """What the traffic costs in a month at ``price``'s per-token rates."""
    return price.cost(*traffic.monthly_tokens())


def blended_usd_per_m(price: Price, input_share: float) -> float:
    """Dollars per million tokens when ``input_share`` of the tokens are input (0.75: three in for one out)."""
    if not 0 <= input_share <= 1:
        raise ValueError(f"input_share must be between 0 and 1, got {input_share}")
    return input_share * price.input_usd_per_m + (1 - input_share) * price.output_usd_per_m


def months_between(earlier: str, later: str) -> int:
    """Whole months from one YYYY-MM to another."""
    (y0, m0), (y1, m1) = (map(int, d.split("-")) for d in (earlier, later))
    return (y1 - y0) * 12 + (m1 - m0)


def price_change(old: Price, new: Price, input_share: float = 0.75) -> float:
    """Relative change of the blended price from ``old`` to ``new`` (-0.8: fell by 80%)."""
    before = blended_usd_per_m(old, input_share)
    if before <= 0:
        raise ValueError(f"{old.model} ({old.as_of}) is free; a relative change from zero is undefined")
    return blended_usd_per_m(new, input_share) / before - 1


@dataclass(frozen=True)
class Gpu:
    """One dated GPU offer: memory (GB), memory bandwidth (TB/s), dense BF16 TFLOP/s and the price of one GPU-hour."""

    gpu: str
    memory_gb: float
    bandwidth_tb_s: float
    bf16_tflops: float
    usd_per_gpu_hour: float
    offer: str
    as_of: str
    source: str


def load_gpus(path: str | Path = GPU_PRICES_FILE) -> list[Gpu]:
    """The GPU price table (see the data README), one :class:`Gpu` per row."""
    gpus = []
    for where, row in read_csv_rows(path, "GPU"):
        try:
            gpu = Gpu(row["gpu"], float(row["memory_gb"]), float(row["bandwidth_tb_s"]), float(row["bf16_tflops"]),
                      float(row["usd_per_gpu_hour"]), row["offer"], row["as_of"], row["source"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected gpu, memory_gb, bandwidth_tb_s, bf16_tflops, "
                             f"usd_per_gpu_hour, offer, as_of, source with numbers where numbers go ({err})") from None
        if min(gpu.memory_gb, gpu.bandwidth_tb_s, gpu.bf16_tflops, gpu.usd_per_gpu_hour) <= 0 or not gpu.source:
            raise ValueError(f"{where}: sizes and prices must be > 0 and the row needs a source")
        gpus.append(gpu)
    return gpus


@dataclass(frozen=True)
class SelfHosting:
    """How a model is served on your own GPUs, every assumption explicit.

    A replica is ``gpus_per_replica`` GPUs holding one copy of the model; at full load it writes
    ``decode_tokens_per_s`` output tokens and reads ``prefill_tokens_per_s`` prompt tokens a second.
    ``utilisation`` is the average share of that capacity the traffic can use (bursts, headroom,
    nights): 0.5 means replicas are sized for twice the average load. ``engineering_usd_per_month``
    is the people and tooling that keep the service running.
    """

    gpu: Gpu
    gpus_per_replica: int
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    utilisation: float = 0.5
    engineering_usd_per_month: float = 0.0
    min_replicas: int = 1

    def __post_init__(self):
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {self.utilisation}")
        if self.gpus_per_replica < 1 or self.min_replicas < 1:
            raise ValueError(f"gpus_per_replica and min_replicas must be >= 1, got {self.gpus_per_replica}, "
                             f"{self.min_replicas}")
        if min(self.decode_tokens_per_s, self.prefill_tokens_per_s) <= 0 or self.engineering_usd_per_month < 0:
            raise ValueError("throughputs must be > 0 and the engineering cost >= 0")

    @property
    def replica_usd_per_month(self) -> float:
        """GPU rent of one replica for a month, busy or not."""
        return self.gpus_per_replica * self.gpu.usd_per_gpu_hour * SECONDS_PER_MONTH / 3600

    def replica_seconds(self, traffic: Traffic) -> float:
        """Seconds of one replica's full capacity the month's traffic needs."""
        input_tokens, output_tokens = traffic.monthly_tokens()
        return output_tokens / self.decode_tokens_per_s + input_tokens / self.prefill_tokens_per_s


def published_throughput(path: str | Path = PUBLISHED_THROUGHPUT_FILE) -> list[dict[str, Any]]:
    """Measured serving throughputs others published (``data/published_throughput.csv``): model, GPU,
    engine, concurrency and output tokens per second for their workload, dated and with the address."""
    rows = []
    for where, row in read_csv_rows(path, "throughput"):
        try:
            row["concurrency"], row["output_tokens_per_s"] = int(row["concurrency"]), float(row["output_tokens_per_s"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: concurrency must be an integer and output_tokens_per_s a number") from None
        if row["output_tokens_per_s"] <= 0 or not str(row.get("source", "")).startswith("http"):
            raise ValueError(f"{where}: throughput must be > 0 and source an address")
        rows.append(row)
    return rows


def measured_replica(gpu: Gpu, output_tokens_per_s: float, gpus: int = 1, **hosting: Any) -> SelfHosting:
    """A replica whose throughput was measured end to end (prompt processing included, as a serving
    benchmark reports it): ``output_tokens_per_s`` for the benchmark's workload, prompts free on top."""
    return SelfHosting(gpu, gpus, output_tokens_per_s, math.inf, **hosting)


def replicas_needed(traffic: Traffic, hosting: SelfHosting) -> int:
    """Replicas to rent so that the traffic uses at most ``utilisation`` of their capacity."""
    needed = hosting.replica_seconds(traffic) / (SECONDS_PER_MONTH * hosting.utilisation)
    return max(hosting.min_replicas, math.ceil(needed - 1e-12))


def self_host_monthly_usd(traffic: Traffic, hosting: SelfHosting) -> float:
    """GPU rent of the replicas the traffic needs plus the engineering cost, for a month."""
    return replicas_needed(traffic, hosting) * hosting.replica_usd_per_month + hosting.engineering_usd_per_month


def break_even(shape: Traffic, price: Price, hosting: SelfHosting) -> dict[str, Any] | None:
    """The smallest volume of ``shape``'s requests at which self-hosting costs no more than the API.

    Walks the replica steps: with r replicas the self-hosted bill is fixed, C_r, up to the volume
    V_r that r replicas can carry; the API bill a x V reaches C_r at V = C_r / a, which is past the
    previous step's end (else the walk would have stopped there), so the first r with C_r / a <= V_r
    holds the crossing.
    Returns ``None`` when one more replica costs more than the API charges for the traffic it
    carries (then the API stays cheaper at every volume), else requests a day, API and self-hosted
    monthly bills and replicas at the crossing.
    """
    per_request_usd = api_monthly_usd(shape.scaled(1.0), price)  # a: API dollars a month per request a day
    per_request_s = hosting.replica_seconds(shape.scaled(1.0))  # replica-seconds a month per request a day
    if per_request_usd <= 0:
        return None
    capacity = SECONDS_PER_MONTH * hosting.utilisation / per_request_s  # requests a day one replica carries
    if per_request_usd * capacity <= hosting.replica_usd_per_month:
        return None

    def bill(replicas: int) -> float:
        return replicas * hosting.replica_usd_per_month + hosting.engineering_usd_per_month

    replicas = hosting.min_replicas
    while bill(replicas) / per_request_usd > replicas * capacity:  # the API line passes under this step
        replicas += 1
    return {"requests_per_day": bill(replicas) / per_request_usd, "api_usd_per_month": bill(replicas),
            "self_host_usd_per_month": bill(replicas), "replicas": replicas}


def tokens_per_dollar(traffic: Traffic, monthly_usd: float) -> float:
    """Tokens (input and output) served per dollar: the article's key cost metric."""
    if monthly_usd <= 0:
        raise ValueError(f"monthly cost must be > 0, got {monthly_usd}")
    return sum(traffic.monthly_tokens()) / monthly_usd


def roofline_replica(config: Any, gpu: Gpu, bits: float = 16, batch: int = 64, efficiency: float = 0.5,
                     memory_share_for_weights: float = 0.7, **hosting: Any) -> SelfHosting:
    """A replica of the model ``config`` on ``gpu``s, its throughput from chapter 4's roofline.

    GPUs: as many as it takes for the weights (``bits`` per weight) to fill at most
    ``memory_share_for_weights`` of their memory, the rest left for the KV cache. Decode: a step
    for ``batch`` sequences reads every weight once (memory roof) and does 2 x active parameters
    FLOPs per token (compute roof); a mixture of experts stores all its experts but computes with
    the few the router picks. Prefill is compute-bound. Both are scaled by ``efficiency``, the share
    of the roofline a real server reaches (its KV-cache reads, scheduling and kernels cost the rest).
    """
    if not 0 < efficiency <= 1 or not 0 < memory_share_for_weights <= 1:
        raise ValueError(f"efficiency and memory_share_for_weights must be in (0, 1], got {efficiency}, "
                         f"{memory_share_for_weights}")
    weights = weight_bytes(config, bits)
    gpus = max(1, math.ceil(weights / (gpu.memory_gb * 1e9 * memory_share_for_weights)))
    active = active_parameter_count(config)
    flops, bandwidth = gpus * gpu.bf16_tflops * 1e12, gpus * gpu.bandwidth_tb_s * 1e12
    decode = roofline_tokens_per_s(batch, active, weights, flops, bandwidth) * efficiency
    prefill = flops / (2 * active) * efficiency
    return SelfHosting(gpu, gpus, decode, prefill, **hosting)
