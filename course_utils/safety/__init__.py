"""Chapter 9: guardrails and monitoring, each check measured as a classifier (personal data,
prompt injection, claim faithfulness, self-consistency and drift so far; cited answers and output
gates to come)."""
