"""Chapter 2, scaling laws: the published laws, a trainer to test them on, and what data does to them.

* :mod:`~course_utils.scaling.laws`: Kaplan and Chinchilla, the fits and compute-optimal allocations;
* :mod:`~course_utils.scaling.training`: a seeded trainer for tiny byte-level decoders, FLOPs counted;
* :mod:`~course_utils.scaling.emergence`: exact match against per-digit scoring of the same answers;
* :mod:`~course_utils.scaling.data_quality`: near-duplicates, quality rules and test-set contamination.
"""
