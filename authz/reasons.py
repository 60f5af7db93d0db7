"""The one table of decision reasons: stable machine codes, their HTTP status and error label.

The same codes appear in deny bodies, Envoy dynamic metadata, logs, audit records,
span attributes and metric labels; renaming one is a breaking change.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a request was allowed or denied."""

    OK = "ok"
    # identity (401: we do not know who is calling)
    KEY_MISSING = "key_missing"
    KEY_MALFORMED = "key_malformed"
    KEY_UNKNOWN = "key_unknown"
    # identity (403: we know, and the answer is no)
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    TIER_UNKNOWN = "tier_unknown"
    VERIFICATION_REQUIRED = "verification_required"
    PATH_NOT_ALLOWED = "path_not_allowed"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MODEL_UNREADABLE = "model_unreadable"
    SOURCE_ADDRESS_INVALID = "source_address_invalid"
    # jurisdiction (403): the rule that matched is named beside the reason
    COUNTRY_DENIED = "country_denied"
    KYC_COUNTRY_DENIED = "kyc_country_denied"
    COUNTRY_MISMATCH = "country_mismatch"
    NETWORK_DENIED = "network_denied"
    ADDRESS_DENIED = "address_denied"
    JURISDICTION_DENIED = "jurisdiction_denied"
    # extraction detection (403): a verdict or score at the deny level
    EXTRACTION_DENIED = "extraction_denied"
    # rate limits and volume (429)
    RATE_LIMITED = "rate_limited"
    VOLUME_ANOMALY = "volume_anomaly"
    # the request itself (400)
    REQUEST_MALFORMED = "request_malformed"
    BODY_MALFORMED = "body_malformed"
    # our own faults under the fail-closed policy (503)
    DEPENDENCY_FAILED = "dependency_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL_ERROR = "internal_error"

    @property
    def status(self) -> int:
        """The HTTP status a denial for this reason carries."""
        return _STATUS[self]

    @property
    def error(self) -> str:
        """The short error label of the deny body (`error` field)."""
        return _ERROR_LABEL[self.status]


_STATUS: dict[Reason, int] = {
    Reason.OK: 200,
    Reason.KEY_MISSING: 401,
    Reason.KEY_MALFORMED: 401,
    Reason.KEY_UNKNOWN: 401,
    Reason.KEY_REVOKED: 403,
    Reason.KEY_EXPIRED: 403,
    Reason.TIER_UNKNOWN: 403,
    Reason.VERIFICATION_REQUIRED: 403,
    Reason.PATH_NOT_ALLOWED: 403,
    Reason.MODEL_NOT_ALLOWED: 403,
    Reason.MODEL_UNREADABLE: 403,
    Reason.SOURCE_ADDRESS_INVALID: 403,
    Reason.COUNTRY_DENIED: 403,
    Reason.KYC_COUNTRY_DENIED: 403,
    Reason.COUNTRY_MISMATCH: 403,
    Reason.NETWORK_DENIED: 403,
    Reason.ADDRESS_DENIED: 403,
    Reason.JURISDICTION_DENIED: 403,
    Reason.EXTRACTION_DENIED: 403,
    Reason.RATE_LIMITED: 429,
    Reason.VOLUME_ANOMALY: 429,
    Reason.REQUEST_MALFORMED: 400,
    Reason.BODY_MALFORMED: 400,
    Reason.DEPENDENCY_FAILED: 503,
    Reason.DEADLINE_EXCEEDED: 503,
    Reason.INTERNAL_ERROR: 503,
}

_ERROR_LABEL: dict[int, str] = {
    200: "none",
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    429: "rate_limited",
    503: "unavailable",
}
