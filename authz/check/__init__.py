"""One Check, phase by phase: the request (request, paths), its route
(policy), the credential (credentials), verification (verify, cache, claims),
revocation, requirements (policy), identity (identity, header_budget), the
decision that runs them in order (decision, steps) and the answer (response)."""
