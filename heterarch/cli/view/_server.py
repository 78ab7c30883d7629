"""``heterarch view``: the page of one run, served locally (aiohttp) or written to a file.

The server reads the span file again when it changed, so the page of a run still writing its
spans follows it (spans arrive as their operations end); the page polls ``version`` and swaps
its body when it moved.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from runtime.errors import RuntimeConfigError

from ._page import render_body, render_page
from ._run import Run, Span, build_run
from ._sources import jaeger_query, read_spans, spans_of


class RunSource:
    """Where the spans come from, read again on demand (a file: when it changed)."""

    def __init__(self, *, path: str | Path | None = None, trace_id: str | None = None,
                 jaeger: str | None = None, load: Callable[[], list[Span]] | None = None) -> None:
        if path is None and jaeger is None and load is None:
            raise RuntimeConfigError("give a span file (or set HETERARCH_TRACE_FILE), or "
                                     "--jaeger URL")
        self.path = Path(path) if path is not None else None
        self.trace_id = trace_id
        self.jaeger = jaeger
        self._load = load
        self._seen: tuple[int, int] | None = None
        self._run: Run | None = None

    def version(self) -> str:
        if self.path is None:
            return "static"
        try:
            stat = self.path.stat()
        except OSError:
            return "missing"
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def run(self) -> Run:
        """The run as the spans say now (a file re-read only when it changed)."""
        if self.path is not None:
            stat = os.stat(self.path) if self.path.exists() else None
            key = (stat.st_mtime_ns, stat.st_size) if stat is not None else (0, 0)
            if self._run is None or key != self._seen:
                self._run = build_run(spans_of(read_spans(self.path), self.trace_id))
                self._seen = key
            return self._run
        if self._run is None:
            if self._load is not None:
                spans = self._load()
            else:
                assert self.jaeger is not None
                from ..trace_show import load_spans_jaeger

                spans = (load_spans_jaeger(self.jaeger, self.trace_id) if self.trace_id
                         else spans_of(jaeger_query(self.jaeger), None))
            self._run = build_run(spans)
        return self._run


def write_html(source: RunSource, out: str | Path, *, title: str = "") -> Run:
    """The static page (no server, no script) of the run, for sharing."""
    run = source.run()
    Path(out).write_text(render_page(run, title=title), encoding="utf-8")
    return run


def make_app(source: RunSource, *, title: str = "") -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=render_page(source.run(), title=title, live=True),
                            content_type="text/html")

    async def fragment(request: web.Request) -> web.Response:
        return web.Response(text=render_body(source.run()), content_type="text/html")

    async def version(request: web.Request) -> web.Response:
        return web.Response(text=source.version())

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/fragment", fragment)
    app.router.add_get("/version", version)
    return app


def serve(source: RunSource, *, host: str = "127.0.0.1", port: int = 8765, title: str = "",
          open_browser: bool = False, print_url: Callable[[str], None] = print) -> None:
    """Serve the page until interrupted."""
    url = f"http://{host}:{port}/"

    async def on_startup(app: web.Application) -> None:
        print_url(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    app = make_app(source, title=title)
    app.on_startup.append(on_startup)
    web.run_app(app, host=host, port=port, print=None)
