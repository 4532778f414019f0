"""Chapter 9: guardrails and monitoring, each check measured as a classifier (personal data and
drift so far; grounding, faithfulness and injection to come)."""
