"""HTTP: health, readiness, metrics, status JSON and a plain status page (aiohttp)."""

from __future__ import annotations

import html
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd import __version__
from syncd.daemon import Daemon

__all__ = ["build_app", "serve"]

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", Daemon)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[DAEMON].ready.is_set():
        return web.Response(text="ready\n")
    return web.Response(status=503, text="first reconcile pass not finished\n")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[DAEMON].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].snapshot())


def _folder_row(folder: dict[str, Any]) -> str:
    state = folder["state"]
    detail = ""
    if state == "syncing" and "progress" in folder:
        progress = folder["progress"]
        total = max(progress["total_bytes"], 1)
        percent = 100 * progress["done_bytes"] / total
        detail = (
            f'<progress max="100" value="{percent:.0f}"></progress> {percent:.0f}% '
            f"{progress['bytes_per_second'] / 1e6:.1f} MB/s"
        )
    elif state == "failed":
        detail = html.escape(folder["error"] or "")
    cells = [
        html.escape(folder["model"]),
        html.escape(folder["selector"]),
        html.escape(folder["version"]),
        f"<code>{html.escape(folder['run_id'])}</code>",
        f'<span class="{state}">{state}</span>',
        detail,
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


_NOTHING_WANTED = "<tr><td colspan=6>nothing wanted yet</td></tr>"


def render_page(snapshot: dict[str, Any]) -> str:
    """The status page for people; links are relative so it works under an app path prefix."""
    sections = []
    for target in snapshot["targets"]:
        rows = "".join(_folder_row(folder) for folder in target["folders"])
        rows += "".join(
            f"<tr><td>{html.escape(model)}</td><td colspan=4></td>"
            f'<td><span class="failed">unresolved</span> {html.escape(error)}</td></tr>'
            for model, error in target["unresolved"].items()
        )
        error = (
            f'<p class="failed">registry: {html.escape(target["error"])}</p>'
            if target["error"]
            else ""
        )
        sections.append(
            f"<h2>{html.escape(target['name'])} <small>{html.escape(target['selector'])} &rarr; "
            f"<code>{html.escape(target['root'])}</code></small></h2>{error}"
            "<table><tr><th>model</th><th>pointer</th><th>version</th><th>run id</th>"
            f"<th>state</th><th></th></tr>{rows or _NOTHING_WANTED}"
            "</table>"
        )
    ready = "ready" if snapshot["ready"] else "first pass in progress"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>syncd</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4em; text-align: left; }}
.synced {{ color: #17803d; }} .failed {{ color: #b42318; }} .syncing {{ color: #175cd3; }}
.pending {{ color: #667085; }} small {{ color: #667085; font-weight: normal; }}
</style></head><body>
<h1>syncd <small>{html.escape(__version__)} &middot; {ready} &middot;
{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}</small></h1>
{"".join(sections) or "<p>No targets configured.</p>"}
<p><a href="metrics">metrics</a> &middot; <a href="api/status">api/status</a> &middot;
<a href="healthz">healthz</a> &middot; <a href="readyz">readyz</a></p>
</body></html>"""


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=render_page(request.app[DAEMON].snapshot()), content_type="text/html")


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application()
    app[DAEMON] = daemon
    app.router.add_get("/", _page)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/status", _status)
    return app


async def serve(daemon: Daemon, host: str, port: int) -> web.AppRunner:
    """Start serving in the background; the caller cleans the runner up."""
    runner = web.AppRunner(build_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
