"""Schemathesis checks for resnet-serve (loaded through SCHEMATHESIS_HOOKS).

5xx answers that the API promises (503 queue full or not ready, 504 deadline) are fine; a 500
(an internal error) never is, and every error must be the JSON {"error": ...} body."""

import schemathesis


@schemathesis.check
def no_internal_error(ctx, response, case):
    if response.status_code == 500 or response.status_code > 504:
        raise AssertionError(f"internal error {response.status_code}: {response.text[:300]}")


@schemathesis.check
def errors_are_json(ctx, response, case):
    if response.status_code >= 400:
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            raise AssertionError(f"error body is not {{'error': str}}: {response.text[:300]}")
