"""Building real ext_authz CheckRequests for tests."""

from __future__ import annotations

from envoy.service.auth.v3 import external_auth_pb2


def check_request(
    headers: dict[str, str] | None = None,
    *,
    body: bytes = b"",
    path: str = "/v1/messages",
    method: str = "POST",
    source: str = "79.192.3.4",
) -> external_auth_pb2.CheckRequest:
    """A CheckRequest as Envoy sends it for one HTTP request."""
    req = external_auth_pb2.CheckRequest()
    req.attributes.source.address.socket_address.address = source
    req.attributes.source.address.socket_address.port_value = 40000
    http = req.attributes.request.http
    http.id = "req-test"
    http.method = method
    http.path = path
    http.host = "api.example"
    http.protocol = "HTTP/1.1"
    http.headers.update({":method": method, ":path": path, **(headers or {})})
    if body:
        http.raw_body = body
        http.size = len(body)
    return req
