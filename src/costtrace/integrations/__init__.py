"""Integrations with one backend's own API, beyond OTLP (:mod:`~costtrace.integrations.phoenix`)."""
