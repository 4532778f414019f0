"""Chapter 9: guardrails and monitoring, each check measured as a classifier (personal data,
prompt injection and drift so far; grounding, faithfulness and output gates to come)."""
