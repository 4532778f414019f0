"""Chapter 08: what goes around the model in an application.

providers (one OpenAI-compatible endpoint, its failures as values), faults (a proxy that injects
them), retry, breaker, balancer, fallback (the resilience stack), caching (exact match in front of
the semantic cache), drill (one fault schedule replayed against each client strategy).
"""
