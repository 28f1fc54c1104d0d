"""schemathesis hooks for tests/api_conformance/run.sh: make *valid* generated requests valid
for facts an OpenAPI 3.0 document cannot state, so that positive_data_acceptance ("a request
the schema allows is not refused") stays on for everything else.

Each rewrite applies to positive cases only (negative cases are meant to be refused, and
are left as generated) and mirrors a rule docs/openapi.yaml states in words:

- X-Causal-Context and If-Match carry tokens the cluster authenticates (a keyed MAC): a
  random string of the right shape is refused with 400 by design. Positive cases carry a real
  token instead, minted by the peer under test when this module loads — unless they already
  carry one the peer issued (the stateful phase passes contexts along the document's links).
- A numeric quorum is at most N, the cluster's replication factor, a runtime setting (1 for
  the peer under test): positive cases ask for 1 instead of a larger number.
- If-Match and If-None-Match exclude each other and X-Causal-Context and return=old; PATCH
  takes exactly one of ttl and persist; a subscription names at least one channel or
  pattern. OpenAPI 3.0 has no way to say "exactly one of these parameters": positive cases
  keep one of each such pair.
"""

import os
import re

import requests
import schemathesis

BASE_URL = os.environ["RINGCACHE_CONFORMANCE_URL"]
AUTH = {"Authorization": "Bearer " + os.environ["RINGCACHE_CONFORMANCE_TOKEN"]}


def _mint_context() -> str:
    response = requests.put(
        BASE_URL + "/v1/kv/conformance-context", data=b"v", headers=AUTH, timeout=10
    )
    response.raise_for_status()
    return response.headers["X-Causal-Context"]


CONTEXT = _mint_context()
# Every context the peer has answered with: real tokens, left as they are.
ISSUED = {CONTEXT}
NUMBER = re.compile(r"^\+?0*[1-9][0-9]*$")


def _header(case, name):
    """The name under which `case` carries header `name` (any case), or None."""
    for key in case.headers or {}:
        if key.lower() == name.lower():
            return key
    return None


@schemathesis.hook
def after_call(context, case, response):
    for name, values in response.headers.items():
        if name.lower() == "x-causal-context":
            ISSUED.update(values)


def _real(value):
    return value if value in ISSUED else CONTEXT


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    headers = case.headers if case.headers is not None else {}
    query = case.query if case.query is not None else {}

    for name in ("r", "w"):
        value = query.get(name)
        if isinstance(value, str) and NUMBER.match(value) and int(value) > 1:
            query[name] = "1"

    if_match = _header(case, "If-Match")
    if_none_match = _header(case, "If-None-Match")
    if if_match and if_none_match:
        del headers[if_none_match]
        if_none_match = None
    if if_match or if_none_match:
        ctx = _header(case, "X-Causal-Context")
        if ctx:
            del headers[ctx]
        query.pop("return", None)
    if if_match and headers[if_match].strip().strip('"') != "*":
        headers[if_match] = _real(headers[if_match])
    ctx = _header(case, "X-Causal-Context")
    if ctx:
        headers[ctx] = _real(headers[ctx])

    if case.method.upper() == "PATCH":
        if "ttl" in query and "persist" in query:
            del query["persist"]
        elif "ttl" not in query and "persist" not in query:
            query["persist"] = ""
    if case.operation.path == "/v1/subscribe" and not (
        query.get("channel") is not None or query.get("pattern") is not None
    ):
        query["channel"] = "conformance"

    if headers:
        case.headers = headers
    if query:
        case.query = query
    return case
