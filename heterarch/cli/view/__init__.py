"""``heterarch view``: a run's page (iterations, spawning tree, timeline per pool and worker,
tokens and dollars, errors) from its spans. A tool: the engine never imports it."""

from ._page import render_body as render_body
from ._page import render_page as render_page
from ._run import Run as Run
from ._run import build_run as build_run
from ._server import RunSource as RunSource
from ._server import make_app as make_app
from ._server import serve as serve
from ._server import write_html as write_html
from ._sources import TraceSummary as TraceSummary
from ._sources import list_traces as list_traces
from ._sources import read_spans as read_spans
from ._sources import spans_of as spans_of

__all__ = ("Run", "RunSource", "TraceSummary", "build_run", "list_traces", "make_app",
           "read_spans", "render_body", "render_page", "serve", "spans_of", "write_html")
