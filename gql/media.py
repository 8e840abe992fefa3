"""The media types of GraphQL over HTTP (https://graphql.github.io/graphql-over-http/):
which one a request's ``Accept`` picks, and the status code of a response in it.

- ``application/graphql-response+json`` (asked for by name): the status says what
  happened. A request that fails before execution (a document that does not parse or
  validate, no such operation, variables that do not coerce) is a 400 with no ``data``
  entry; a request the database could not serve at all (``data`` null, every error
  ``SERVICE_UNAVAILABLE``) is a 503, also with no ``data``; anything that executed is a
  200, errors or not.
- ``application/json`` (no ``Accept``, ``*/*``, ``application/*``, or asked for): every
  well-formed GraphQL request is a 200 with ``data`` (null when it never ran), as GraphQL
  servers answered before the spec; clients read the errors.

Either way, a body that is no GraphQL request at all is a 4xx with a JSON error
(``gql/http.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
UNAVAILABLE = "SERVICE_UNAVAILABLE"
_CANDIDATES = (GRAPHQL_RESPONSE, JSON)
_SPECIFICITY = {"application/*": 1, "*/*": 0}
_CACHE_SIZE = 256
_chosen: dict[str, str | None] = {}


def negotiate(accept: str | None) -> str | None:
    """The media type to answer in, or None when ``accept`` allows neither (406).

    A missing or empty ``Accept`` means ``application/json``. Otherwise the highest
    quality wins; on a tie a type the client named beats one it matched by a wildcard
    (``*/*`` alone is ``application/json``), and of two it named, the first named.
    Clients send the same few values again and again, so the answer is remembered."""
    if not accept:
        return JSON
    found = _chosen.get(accept, _CACHE_SIZE)
    if found != _CACHE_SIZE:
        return found  # type: ignore[return-value]
    chosen = _negotiate(accept)
    if len(_chosen) >= _CACHE_SIZE:
        _chosen.clear()
    _chosen[accept] = chosen
    return chosen


def _negotiate(accept: str) -> str | None:
    # Each candidate's quality from the range matching it most specifically (RFC 9110,
    # 12.5.1), and whether that range named it and where.
    matched: dict[str, tuple[int, float, int]] = {}  # candidate: (specificity, q, position)
    for position, item in enumerate(accept.split(",")):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        media_range = media_range.lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        for candidate in _CANDIDATES:
            specificity = _SPECIFICITY.get(media_range, -1) if media_range != candidate else 2
            if specificity >= 0 and specificity > matched.get(candidate, (-1, 0.0, 0))[0]:
                matched[candidate] = (specificity, quality, position)

    def preference(candidate: str) -> tuple[float, bool, int, bool]:
        specificity, quality, position = matched[candidate]
        named = specificity == 2
        return quality, named, -position if named else 0, candidate == JSON

    acceptable = [c for c in matched if matched[c][1] > 0]
    return max(acceptable, key=preference) if acceptable else None


def shape(media_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and body of a GraphQL response ``body`` (``{"data", "errors"}``) in
    ``media_type``: see the module's docstring."""
    if media_type != GRAPHQL_RESPONSE or body.get("data") is not None:
        return 200, body
    errors: Sequence[Mapping[str, Any]] = body.get("errors") or ()
    if not errors:
        return 200, body
    if all("path" not in error for error in errors):
        return 400, {"errors": errors}  # the request never reached execution
    if all((error.get("extensions") or {}).get("code") == UNAVAILABLE for error in errors):
        return 503, {"errors": errors}
    return 200, body
