"""Translation between Envoy's ext_authz v3 messages and the pipeline's plain values.

The only module that reads a CheckRequest or builds a CheckResponse.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from authz.decision import Decision
from authz.facts import PARTIAL_BODY_HEADER, RequestFacts, parse_ip

_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_RPC_CODE = {
    401: code_pb2.UNAUTHENTICATED,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


def facts_from_check_request(req: external_auth_pb2.CheckRequest) -> RequestFacts:
    """Turn a CheckRequest into request facts; a broken one yields facts marked malformed."""
    attrs = req.attributes
    source = _source_text(attrs.source.address)
    if not attrs.HasField("request") or not attrs.request.HasField("http"):
        return RequestFacts(
            method="",
            path="",
            host="",
            headers={},
            client_ip=parse_ip(source),
            source=source,
            malformed="CheckRequest has no attributes.request.http",
        )
    http = attrs.request.http
    headers = _headers(http)
    if http.raw_body:
        body: bytes | None = http.raw_body
    elif http.body:
        body = http.body.encode("utf-8", errors="surrogateescape")
    else:
        body = None
    partial = body is not None and (
        headers.get(PARTIAL_BODY_HEADER) == "true"
        or http.size > len(body)
        # Envoy may mark a body cut exactly at max_request_bytes as complete;
        # Content-Length still tells.
        or _content_length(headers) > len(body)
    )
    malformed = ""
    if not http.method or not http.path:
        malformed = "CheckRequest lacks the HTTP method or path"
    return RequestFacts(
        method=http.method,
        path=http.path,
        host=http.host,
        headers=headers,
        client_ip=parse_ip(source),
        source=source,
        body=body,
        body_partial=partial,
        # x-request-id is what Envoy's access log and the model server see;
        # http.id is only Envoy's internal stream id.
        request_id=headers.get("x-request-id", "") or http.id,
        protocol=http.protocol,
        malformed=malformed,
    )


def _content_length(headers: dict[str, str]) -> int:
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0


def _source_text(address: address_pb2.Address) -> str:
    if address.HasField("socket_address"):
        return str(address.socket_address.address)
    if address.HasField("pipe"):
        return "pipe:" + str(address.pipe.path)
    return ""


def _headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    """Header map with lower-case names; `header_map` (raw) is read when Envoy sends it."""
    if http.headers:
        return {k.lower(): v for k, v in http.headers.items()}
    headers: dict[str, str] = {}
    for h in http.header_map.headers:
        value = h.raw_value.decode("utf-8", errors="replace") if h.raw_value else h.value
        name = h.key.lower()
        # Envoy joins repeated headers with a comma in `headers`; do the same here.
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    # `append_action` for current Envoy, the deprecated `append=false` for older ones.
    # (Dict initialisers build the nested messages about twice as fast under upb.)
    return base_pb2.HeaderValueOption(
        header={"key": key, "value": value},
        append_action=_OVERWRITE,
        append={"value": False},
    )


def _metadata(decision: Decision) -> struct_pb2.Struct:
    caller = decision.caller
    fields: dict[str, str] = {
        "decision_id": decision.decision_id,
        "action": decision.action.value,
        "reason": decision.reason.value,
        "rules_version": decision.rules_version,
    }
    if decision.would_deny is not None:
        fields["would_deny"] = decision.would_deny.value
    if decision.rule is not None:
        fields["rule"] = decision.rule
    if decision.client_ip is not None:
        fields["client_ip"] = str(decision.client_ip)
    if decision.location is not None:
        fields["country"] = decision.location.country or decision.location.kind.value
        if decision.location.asn is not None:
            fields["asn"] = str(decision.location.asn)
    if decision.flags:
        fields["flags"] = ",".join(decision.flags)
    if decision.shadow_denies:
        fields["shadow_denies"] = ",".join(decision.shadow_denies)
    if caller is not None:
        fields.update(
            key_id=caller.key_id,
            account=caller.account.account,
            entity=caller.account.entity,
            tier=caller.account.tier,
        )
    return struct_pb2.Struct(
        fields={k: struct_pb2.Value(string_value=v) for k, v in fields.items()}
    )


def check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    """The one translation of a Decision into Envoy's answer."""
    if decision.allowed:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(k, v) for k, v in decision.upstream_headers],
                headers_to_remove=list(decision.remove_headers),
                response_headers_to_add=[_header(k, v) for k, v in decision.response_headers],
            ),
            dynamic_metadata=_metadata(decision),
        )
    headers = [_header("content-type", "application/json")]
    headers += [_header(k, v) for k, v in decision.response_headers]
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=_RPC_CODE.get(decision.status, code_pb2.PERMISSION_DENIED),
            message=decision.reason.value,
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),
            headers=headers,
            body=decision.deny_body().decode(),
        ),
        dynamic_metadata=_metadata(decision),
    )
