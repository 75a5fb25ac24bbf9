"""One Check, phase by phase: the request (request, paths, lookalikes), its
route (policy), the credential (credentials), verification (verify, cache,
claims), revocation, requirements (requirements), identity (identity,
header_budget), the decision that runs them in order (decision, steps) and the
answer (response)."""
