"""Schemathesis hooks for the contract run (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import schemathesis

CLAIM = "POST /v1/workers/claim"
MAX_CLAIM_WAIT_S = 0.2
LONGEST_WAIT_S = 60  # ClaimRequest's bound: a longer one is a negative case, left as it is


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """A claim long-polls for `wait` seconds (20 by default, 60 at most) when no job is queued: keep the waits
    short so the run stays within its budget. A `wait` out of bounds or of the wrong type (a negative case)
    goes through as it is."""
    if case.operation.label == CLAIM and isinstance(case.body, dict):
        wait = case.body.get("wait", LONGEST_WAIT_S)
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and MAX_CLAIM_WAIT_S < wait <= LONGEST_WAIT_S:
            case.body["wait"] = MAX_CLAIM_WAIT_S
    return case
