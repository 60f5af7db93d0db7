"""Hostile and broken CheckRequests: always an answer, never a gRPC error or a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.reasons import Reason
from tests.checkreq import check_request
from tests.fakes import ACME_KEY, BOB_KEY, CAROL_KEY
from tests.serverthread import ServerThread, demo_settings

REASONS = {r.value for r in Reason}
KNOWN_KEYS = {ACME_KEY, BOB_KEY, CAROL_KEY}


@pytest.fixture(scope="module")
def stub() -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    """A client of a real server with the demo rules and accounts."""
    running = ServerThread(demo_settings())
    with grpc.insecure_channel(
        running.target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)
    running.close()


def assert_clear_answer(resp: external_auth_pb2.CheckResponse) -> str:
    """The response is an allow, or a deny whose JSON body names a known reason."""
    kind = resp.WhichOneof("http_response")
    assert kind in {"ok_response", "denied_response"}
    if kind == "ok_response":
        return "ok"
    body = json.loads(resp.denied_response.body)
    assert body["reason"] in REASONS and body["decision_id"]
    assert resp.denied_response.status.code in {400, 401, 403, 429, 503}
    return str(body["reason"])


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)
header_names = st.one_of(
    st.sampled_from(["authorization", "x-api-key", "content-length", "x-distill-tier", "host"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-:", min_size=1, max_size=20),
)
key_values = st.one_of(
    text,
    st.sampled_from(sorted(KNOWN_KEYS)),
    st.sampled_from(sorted(KNOWN_KEYS)).map(lambda k: "Bearer " + k),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@st.composite
def check_requests(draw: st.DrawFn) -> external_auth_pb2.CheckRequest:
    """CheckRequests with arbitrary sources, methods, paths, headers and bodies."""
    headers = draw(st.dictionaries(header_names, st.one_of(text, key_values), max_size=6))
    req = check_request(
        headers,
        body=draw(
            st.one_of(st.just(b""), st.binary(max_size=512), st.just(b'{"model": "small-1"}'))
        ),
        path=draw(st.one_of(st.sampled_from(["/v1/messages", "/v1/models", ""]), text)),
        method=draw(st.sampled_from(["POST", "GET", "", "BREW"])),
        source=draw(
            st.one_of(
                st.sampled_from(["79.192.3.4", "::ffff:2.176.1.1", "2a01:cb00::1", "10.1.2.3"]),
                text,
            )
        ),
    )
    if draw(st.booleans()):
        req.attributes.request.http.size = draw(st.integers(min_value=-1, max_value=1 << 30))
    if draw(st.integers(0, 9)) == 0:
        req.attributes.ClearField("request")
    if draw(st.integers(0, 9)) == 0:
        req.attributes.source.address.ClearField("socket_address")
        req.attributes.source.address.pipe.path = draw(text)
    return req


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(check_requests())
def test_any_check_request_gets_a_clear_answer(
    stub: external_auth_pb2_grpc.AuthorizationStub, req: external_auth_pb2.CheckRequest
) -> None:
    """Whatever Envoy sends, the answer is an allow or a deny with a named reason."""
    reason = assert_clear_answer(stub.Check(req, timeout=5))
    if reason == "ok":
        http = req.attributes.request.http
        presented = {v.removeprefix("Bearer ").strip() for v in http.headers.values()}
        assert presented & KNOWN_KEYS, "only a known key is ever allowed"


def test_one_megabyte_header(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """A 1 MB header value is read and answered; a 1 MB key is malformed."""
    resp = stub.Check(check_request({"x-api-key": BOB_KEY, "x-junk": "a" * (1 << 20)}))
    assert assert_clear_answer(resp) == "ok"
    resp = stub.Check(check_request({"x-api-key": "a" * (1 << 20)}))
    assert assert_clear_answer(resp) == "key_malformed"


def test_ten_kilobyte_and_binary_keys(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """A 10 KB key and a binary key are denied as malformed, never looked up."""
    assert assert_clear_answer(stub.Check(check_request({"x-api-key": "k" * 10_240}))) == (
        "key_malformed"
    )
    req = check_request()
    req.attributes.request.http.ClearField("headers")
    req.attributes.request.http.header_map.headers.add(
        key="x-api-key", raw_value=b"\x00\xff\xfe" + bytes(range(256))
    )
    assert assert_clear_answer(stub.Check(req)) == "key_malformed"


def test_non_utf8_body(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """A non-UTF-8 body is denied with body_malformed, naming the problem."""
    resp = stub.Check(check_request({"x-api-key": BOB_KEY}, body=b'{"model": "\xff\xfe"}'))
    assert assert_clear_answer(resp) == "body_malformed"


def test_huge_body_is_bounded(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """A body beyond the examined bound is read as partial, not rejected or fully parsed."""
    body = b'{"model": "small-1", "messages": "' + b"x" * (3 << 20) + b'"}'
    resp = stub.Check(check_request({"x-api-key": BOB_KEY}, body=body))
    assert assert_clear_answer(resp) == "ok"
