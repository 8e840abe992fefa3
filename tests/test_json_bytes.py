"""HTTP bodies encoded by orjson mean exactly what ``json.dumps`` said before: the same
values, keys in the same order (datetimes as their ``isoformat()``); non-ASCII goes out
as UTF-8 (the HTTP answer checked byte-wise too); what orjson refuses falls back to
``json``."""

from __future__ import annotations

import json
from datetime import UTC, date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from punchcard.gql import json_bytes
from tests.conftest import Api
from tests.helpers import CREATE_CLIENT

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def pairs(text: bytes | str) -> Any:
    """The decoded value with every object as its list of (key, value) pairs: order counts."""
    return json.loads(text, object_pairs_hook=list)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_json_as_json_dumps(value: Any) -> None:
    encoded = json_bytes.dumps(value)
    assert isinstance(encoded, bytes)
    assert pairs(encoded) == pairs(json.dumps(value, separators=(",", ":")))


def test_compact_and_utf8() -> None:
    body = {"z": 1, "a": [1.5, 1e-7, None, True], "é": "Zoë 🏋️"}
    encoded = json_bytes.dumps(body)
    assert encoded == '{"z":1,"a":[1.5,1e-7,null,true],"é":"Zoë 🏋️"}'.encode()


def test_what_orjson_refuses_falls_back() -> None:
    for body in ({"big": 2**70}, {"lone": "\ud800"}, {1: "int key"}):
        encoded = json_bytes.dumps(body)
        assert encoded == json.dumps(body, separators=(",", ":")).encode()
        encoded.decode("ascii")  # escaped: always valid UTF-8


async def test_http_answer_is_utf8(api: Api) -> None:
    name = "Zoë Åström 🏋️"
    created = await api.data(CREATE_CLIENT, name=name)
    response = await api.http.post(
        "/graphql",
        json={"query": "query($id: ID!) { client(id: $id) { name } }",
              "variables": {"id": created["createClient"]["id"]}},
        headers={"Authorization": f"Bearer {api.token}"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.content == f'{{"data":{{"client":{{"name":"{name}"}}}}}}'.encode()
    assert int(response.headers["content-length"]) == len(response.content)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes() | st.dates())
def test_a_datetime_is_written_as_its_isoformat(moment: date) -> None:
    """What a planned answer leaves in its data for a DateTime leaf (a UTC datetime) is
    written as graphql-core's serializer would have: ``isoformat()``, by orjson and by
    the fallback alike."""
    expected = json.dumps([moment.isoformat()], separators=(",", ":")).encode()
    assert json_bytes.dumps([moment]) == expected
    assert json_bytes.dumps([moment, 2**70]) == expected[:-1] + b"," + str(2**70).encode() + b"]"
