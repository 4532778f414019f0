"""Does the copying model of notebook 03 learn an induction head when its episodes vary in length?

Notebook 03 trains a 2-layer decoder on episodes that all have 16 symbols; the rule it learns is
positional ("copy from 16 places back"), which fails on episodes of 12. Here the same model is
trained on episodes of 8 to 24 symbols, where no single distance works, and probed the same way:
in-context score on length-16 and length-12 episodes, and the best head's induction score and
layer, at 12 points during training. A content-matching (induction) rule keeps its gain on both
lengths and needs a head in the second layer (reading a previous-token head of the first).

Writes benchmarks/results/induction.json.
"""

from __future__ import annotations

import string
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "induction.json"
MIXED, TOKENS, SEED = (8, 24), 12_000_000, 0


def main() -> None:
    from course_utils.environment import record_benchmark
    from course_utils.icl.induction import copying_probes, episodes, learned_rule, probe_batch
    from course_utils.scaling.training import Corpus, TrainConfig, train

    alphabet = (string.ascii_letters + string.digits + "+-")[:64]  # notebook 03's alphabet
    corpus = Corpus.from_bytes(episodes(600_000, MIXED, seed=1, alphabet=alphabet),
                               episodes(400, MIXED, seed=2, alphabet=alphabet))
    probe, other = probe_batch(16, alphabet=alphabet), probe_batch(12, alphabet=alphabet)
    config = TrainConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, seq_len=64, batch_size=16, tokens=TOKENS,
                         lr=1e-2, seed=SEED)  # notebook 03's model and optimiser
    run = train(config, corpus, probe=lambda m: copying_probes(m, probe, other), probe_points=12)
    points = [{"tokens": t, "length 16": round(p["score"], 3), "length 12": round(p["other length"], 3),
               "induction": round(p["induction"], 3), "head": list(p["head"]), "rule": learned_rule(p)}
              for t, p in run.probes]
    for p in points:
        print(p)
    final = run.probes[-1][1]
    record_benchmark(RESULTS, "induction", episode_lengths=list(MIXED), tokens=TOKENS, seed=SEED,
                     parameters=run.n_params, seconds=round(run.seconds, 1), probes=points,
                     final_rule=learned_rule(final), final_head_layer=final["head"][0])


if __name__ == "__main__":
    main()
