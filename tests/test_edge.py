"""The CheckRequest -> facts translation at the gRPC edge."""

from __future__ import annotations

import ipaddress

from authz.edge import facts_from_check_request
from tests.checkreq import check_request


def test_body_cut_at_the_bound_is_partial() -> None:
    """A body shorter than Content-Length is partial even when Envoy says it is not."""
    req = check_request(
        {"content-length": "2000000", "x-envoy-auth-partial-body": "false"}, body=b"{"
    )
    assert facts_from_check_request(req).body_partial
    full = check_request({"content-length": "1"}, body=b"{")
    assert not facts_from_check_request(full).body_partial
    flagged = check_request({"x-envoy-auth-partial-body": "true"}, body=b"{")
    assert facts_from_check_request(flagged).body_partial


def test_request_id_is_the_x_request_id_header() -> None:
    """The request id joins Envoy's access log: x-request-id, not Envoy's stream id."""
    req = check_request({"x-request-id": "5b1f-uuid"})
    assert facts_from_check_request(req).request_id == "5b1f-uuid"
    assert facts_from_check_request(check_request()).request_id == "req-test"


def test_ipv4_mapped_source_becomes_ipv4() -> None:
    """An IPv4-mapped IPv6 source is the IPv4 address it maps."""
    facts = facts_from_check_request(check_request(source="::ffff:198.51.100.4"))
    assert facts.client_ip == ipaddress.IPv4Address("198.51.100.4")
    assert facts_from_check_request(check_request(source="not-an-ip")).client_ip is None


def test_repeated_raw_headers_are_joined() -> None:
    """Repeated headers in Envoy's raw header_map form are joined with commas."""
    req = check_request()
    http = req.attributes.request.http
    http.ClearField("headers")
    http.header_map.headers.add(key="X-Forwarded-For", raw_value=b"1.1.1.1")
    http.header_map.headers.add(key="x-forwarded-for", raw_value=b"2.2.2.2")
    assert facts_from_check_request(req).headers["x-forwarded-for"] == "1.1.1.1,2.2.2.2"
