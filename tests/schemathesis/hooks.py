"""Checks the engine's answers must pass beyond schemathesis' own (SPEC section 3)."""

import schemathesis


@schemathesis.check
def retry_after_with_503(ctx, response, case):
    """A 503 is not a server error only when it says when to retry: with Retry-After."""
    if response.status_code == 503 and "retry-after" not in response.headers:
        raise AssertionError("503 without a Retry-After header")
