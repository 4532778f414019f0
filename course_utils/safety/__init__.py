"""Chapter 9: guardrails and monitoring, each check measured as a classifier.

pii and pii_set (personal data), injection and injection_set (prompt injection), claims
(faithfulness scorers), consistency, drift and traffic (monitoring signals), citations, output_checks,
guardrails (the input and output layers), monitoring (dashboards from traces), red_team, assistant.
"""
