"""OpenTelemetry's process-wide state, put back between tests that install a provider."""

from __future__ import annotations

import sys

from opentelemetry import trace
from opentelemetry.util._once import Once

from actors import _semconv
from runtime._observe import tracing as _tracing

_OURS = ("actors", "runtime", "heterarch", "sandbox", "transports", "tests")


def reset_tracing() -> None:
    """No provider, no switch, content capture from the environment again; and every tracer
    our modules hold (``tracer = trace.get_tracer(...)`` at import) forgets the provider it
    bound to, so spans of a later test reach that test's provider, not a dead one."""
    _tracing._off()
    with _tracing._switch_lock:
        _tracing._switch = None
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    _semconv.set_content_capture(None)
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(_OURS):
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, trace.ProxyTracer):
                value._real_tracer = None
            elif type(value).__name__ == "Tracer" and type(value).__module__.startswith(
                    "opentelemetry.sdk.trace"):  # bound at import to a provider now gone
                setattr(module, attribute, trace.ProxyTracer(
                    value.instrumentation_info.name))
