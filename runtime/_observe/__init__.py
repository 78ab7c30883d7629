"""Observability: OpenTelemetry setup, span file reading (`trace show`), the live view."""
