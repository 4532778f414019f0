"""Chapter 1, the transformer from the inside: every piece written out and checked against a reference.

* :mod:`~course_utils.architecture.attention`: naive, tiled (FlashAttention's recurrence) and SDPA attention;
* :mod:`~course_utils.architecture.rope`: rotary positions and their long-context scalings;
* :mod:`~course_utils.architecture.transformer`: a from-scratch Llama whose logits equal transformers';
* :mod:`~course_utils.architecture.sizing`: parameters, memory and FLOPs from a model's configuration;
* :mod:`~course_utils.architecture.measure`: timing and peak memory of attention, and slope fits.
"""
