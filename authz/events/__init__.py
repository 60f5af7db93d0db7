"""Reportable events: incidents the rules name, detected off the request path and
reported once each, to the audit trail, a webhook and the log (docs/events.md)."""
