"""What the schemathesis suites over shoal's OpenAPI schemas share (tests/service/test_openapi_*.py): every
built-in check, with `positive_data_acceptance` narrowed to the rules JSON Schema cannot state.

The schemas say everything a field may be on its own (types, bounds, name patterns, no control characters,
base64, enums, exactly one runtime); what no JSON Schema can say is a rule between fields or against the
cluster's state. A schema-valid request refused with a 400 passes only when its message names one of those
rules (`BEYOND_JSON_SCHEMA`, each listed here on purpose); any other 400 for schema-valid data still fails."""

from __future__ import annotations

import re
from typing import Any

from schemathesis import checks
from schemathesis.openapi.checks import RejectedPositiveData

#: messages of the validators' rules between fields (docs/api.md lists them)
BEYOND_JSON_SCHEMA = re.compile("|".join([
    r"gateway: .* is not inside subnet", r"gateway: invalid IP address", r"gateway: .* is the (network|broadcast)",
    r"invalid subnet", r"subnet .* is too (large|small)",
    r"is attached more than once", r"target .* is used by", r"used more than once", r"more than once",
    r"update_config|rollback_config",  # not for jobs
    r"published_port .* is (already )?used by", r"ports\[\d+\]",
    r"test \[", r"test must start with one of", r"must be 0 or at least 1ms",  # healthcheck forms: by position
    r"command must not be empty", r"max_replicas", r"spread", r"constraint",
    r"duration", r"data must not be empty", r"data is \d+ bytes",
    r"generic", r"platform",
    # rules against the cluster's state: a reference to an object that does not exist (SwarmKit answers
    # InvalidArgument too), and rules between the fields of an update body
    r"'[^']*' not found", r"give either spec or individual changes", r"nothing to change",
    r"give either spec or the sections to change", r"exactly one mode may be given",
    r"is ambiguous: it prefixes (\d+ .* ids|more than one .* id)",  # a short id prefix matching several objects
    r"has no previous spec to roll back to",
    # a duration's bounds: the schema's duration is a number or a string ("5s"), so it cannot bound it
    r"must be at least \d+ seconds", r"must be between \d+s and \d+s", r"must be greater than 0",
    # JSON Schema's `integer` includes 2026.0; the strict models refuse a float where an integer belongs (issue
    # 16: no coercion), so an integral float is the one schema-valid integer they do not take
    r"Input should be a valid integer$",
]))


def positive_data_acceptance_beyond_json_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """`checks.positive_data_acceptance`, except a 400 naming a rule between fields (module doc)."""
    try:
        return checks.positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        message = ""
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            pass
        if response.status_code == 400 and BEYOND_JSON_SCHEMA.search(message):
            return None
        raise


EXCLUDED = [checks.positive_data_acceptance]
ADDITIONAL = [positive_data_acceptance_beyond_json_schema]
