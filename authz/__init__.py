"""distill-guard: an Envoy ext_authz service that governs access to a model API."""

__version__ = "0.1.0"
