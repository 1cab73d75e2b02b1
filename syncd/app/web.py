"""HTTP: health, readiness, metrics, status JSON and a plain status page (aiohttp)."""

from __future__ import annotations

import html
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd import __version__
from syncd.app.http_guard import ConnectionGuard, GuardedServer, start_guarded
from syncd.app.snapshot import snapshot
from syncd.app.webhook import (
    check_delivery,
    delivery_model,
    describe_delivery,
)
from syncd.errors import WebhookRejectedError
from syncd.reconcile.daemon import Daemon

__all__ = ["build_app", "serve"]

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", Daemon)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    if "in_place" in request.query:
        # Stricter, for a startup gate: 200 only once every serving folder is on disk.
        in_place, detail = daemon.serving_folders_in_place()
        state = "in_place" if in_place else "not_in_place"
        return web.Response(status=200 if in_place else 503, text=f"{state}: {detail}\n")
    readiness = daemon.readiness()
    text = f"{readiness.state}: {readiness.detail}\n"
    return web.Response(status=200 if readiness.ready else 503, text=text)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[DAEMON].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(snapshot(request.app[DAEMON]))


_STATE_LABEL = {
    "synced": "in place",
    "syncing": "syncing",
    "failed": "failed",
    "pending": "not yet",
    "standby": "standby",
}


def _span(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _ago(timestamp: float, now: float) -> str:
    return f"{_span(now - timestamp)} ago"


def _folder_row(folder: dict[str, Any], now: float) -> str:
    state = folder["state"]
    detail = ""
    if state == "syncing" and "progress" in folder:
        progress = folder["progress"]
        total = max(progress["total_bytes"], 1)
        percent = 100 * progress["done_bytes"] / total
        detail = (
            f'<progress max="100" value="{percent:.0f}"></progress> {percent:.0f}% &middot; '
            f"{progress['done_files']}/{progress['total_files']} files &middot; "
            f"{progress['bytes_per_second'] / 1e6:.1f} MB/s"
        )
    elif state == "failed":
        detail = _short_error(folder["error"] or "")
        if folder.get("terminal"):
            detail += ' <span class="muted">not retried until the pointer moves (or SIGHUP)</span>'
    elif state == "synced":
        detail = f"checked {_ago(folder['updated_at'], now)}"
        if folder.get("alias_to_ready_seconds") is not None:
            detail += f" &middot; ready {folder['alias_to_ready_seconds']:.1f}s after the move"
    elif state == "standby":
        detail = "another process writes this root"
    if folder.get("hooks"):
        hooks = ", ".join(
            f"{hook['kind']} {'ok' if hook['result'] == 'success' else hook['result']}"
            for hook in folder["hooks"]
        )
        failed = [h["detail"] for h in folder["hooks"] if h["result"] != "success"]
        detail += f" &middot; after sync: {html.escape(hooks)}"
        if failed:
            detail += " " + _short_error("; ".join(failed))
    cells = [
        f"<strong>{html.escape(folder['model'])}</strong>",
        f"{html.escape(folder['selector'])} &rarr; v{html.escape(folder['version'])}"
        + (" <small>(pre-staged)</small>" if folder.get("role") == "prefetch" else ""),
        f"<code>{html.escape(folder['run_id'])}</code>",
        f'<span class="state {state}">{_STATE_LABEL.get(state, state)}</span>',
        detail,
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


_SHORT_ERROR = 160


def _short_error(error: str) -> str:
    """An error once, cut to a readable length; the whole text on hover (and in /api/status)."""
    if len(error) <= _SHORT_ERROR:
        return f'<span class="error">{html.escape(error)}</span>'
    short = error[: _SHORT_ERROR - 1] + "\u2026"
    return f'<span class="error" title="{html.escape(error)}">{html.escape(short)}</span>'


def _kept_row(kept: dict[str, Any], now: float) -> str:
    """A folder no target wants, kept so a rollback is instant: since when, until when."""
    until = kept.get("removed_after")
    when = (
        f"removed in {_span(until - now)} (gc_grace)"
        if until is not None
        else "kept while it is among the newest keep_previous of its model"
    )
    return (
        f"<tr><td>{html.escape(kept['was'])}</td><td></td>"
        f"<td><code>{html.escape(kept['run_id'][:12])}</code></td>"
        '<td><span class="state pending">kept for rollback</span></td>'
        f'<td class="muted">unwanted since {_ago(kept["unwanted_since"], now)}; {when}</td></tr>'
    )


def _target_section(target: dict[str, Any], now: float) -> str:
    rows = "".join(_folder_row(folder, now) for folder in target["folders"])
    rows += "".join(_kept_row(kept, now) for kept in target.get("kept_for_rollback") or [])
    rows += "".join(
        f"<tr><td><strong>{html.escape(model)}</strong></td><td colspan=2></td>"
        f'<td><span class="state failed">unresolved</span></td>'
        f"<td>{_short_error(error)}</td></tr>"
        for model, error in target["unresolved"].items()
    )
    if not rows:
        patterns = ", ".join(html.escape(m) for m in target["models"])
        rows = (
            '<tr><td colspan=5 class="muted">could not ask the registry yet</td></tr>'
            if target["error"]
            else f'<tr><td colspan=5 class="muted">no model matching {patterns} has '
            f"{html.escape(target['selector'])}</td></tr>"
        )
    notes = []
    if target["error"]:
        since = target.get("error_since")
        when = f" since {_ago(since, now)}" if since else ""
        notes.append(
            f'<p class="error">could not reach the registry{when}: '
            f"{_short_error(target['error'])}</p>"
        )
    for name, close in (target.get("missing_models") or {}).items():
        hint = f" (did you mean <code>{html.escape(close)}</code>?)" if close else ""
        notes.append(
            f'<p class="error">no registered model is named <code>{html.escape(name)}</code>'
            f"{hint}: check <code>models</code> in the config</p>"
        )
    for endpoint, detail in (target.get("endpoints_left_stopped") or {}).items():
        notes.append(
            f'<p class="error"><strong>Domino endpoint {html.escape(endpoint)} is stopped</strong>'
            f" (syncd stopped it to restart it and could not start it): "
            f"{_short_error(detail)}</p>"
        )
    if not target["writer"]:
        holder = html.escape(target["lock_holder"] or "")
        notes.append(f'<p class="muted">standby: {holder} writes this root</p>')
    if target["foreign_folders"]:
        names = ", ".join(html.escape(name) for name in target["foreign_folders"])
        notes.append(f'<p class="muted">not created by syncd, left alone: {names}</p>')
    return (
        f"<section><h2>{html.escape(target['name'])} "
        f"<small>{html.escape(target['selector'])} &middot; "
        f"<code>{html.escape(target['root'])}</code></small></h2>{''.join(notes)}"
        "<table><thead><tr><th>model</th><th>pointer</th><th>run id</th><th>folder</th>"
        f"<th></th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _events(events: list[dict[str, Any]], now: float) -> str:
    if not events:
        return '<p class="muted">nothing yet</p>'
    items = "".join(
        f'<li class="{event["level"]}"><span class="muted">{_ago(event["at"], now)}</span> '
        f"<strong>{html.escape(event['target'])}</strong> {html.escape(event['message'])}</li>"
        for event in events[:20]
    )
    return f"<ul class=events>{items}</ul>"


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2939; background: #f6f7f9; }
header { background: #101828; color: #fff; padding: 14px 28px; display: flex; gap: 18px;
         align-items: baseline; }
header h1 { margin: 0; font-size: 20px; }
main { padding: 8px 28px 28px; }
section { background: #fff; border: 1px solid #e4e7ec; border-radius: 8px; margin: 18px 0;
          padding: 4px 18px 14px; }
h2 { font-size: 16px; } small, .muted { color: #667085; font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; color: #667085; font-weight: 500; border-bottom: 1px solid #e4e7ec; }
td, th { padding: 7px 8px; vertical-align: top; }
tr + tr td { border-top: 1px solid #f2f4f7; }
.state { border-radius: 10px; padding: 1px 9px; font-size: 12px; white-space: nowrap; }
.synced { background: #dcfae6; color: #067647; } .failed { background: #fee4e2; color: #b42318; }
.syncing { background: #d1e9ff; color: #175cd3; } .pending, .standby { background: #f2f4f7; }
.error { color: #b42318; overflow-wrap: anywhere; }
progress { width: 140px; vertical-align: middle; }
ul.events { list-style: none; padding: 0; margin: 0; }
ul.events li { padding: 4px 0; border-top: 1px solid #f2f4f7; }
li.error strong { color: #b42318; } li.warning strong { color: #b54708; }
a { color: #175cd3; } .ready { color: #75e0a7; } .notready { color: #fdb022; }
"""


def render_page(snapshot: dict[str, Any], now: float | None = None) -> str:
    """The status page for people; links are relative so it works under an app path prefix."""
    now = time.time() if now is None else now
    sections = "".join(_target_section(target, now) for target in snapshot["targets"])
    readiness = snapshot.get("readiness") or {}
    label = {
        "synced": "ready: all in place",
        "syncing": "ready: syncing",
        "standby": "ready: standby",
        "nothing_matches": "ready: nothing matches",
        "registry_unreachable": "registry unreachable",
        "storage_unreachable": "artifact store unreachable",
        "starting": "first pass in progress",
    }.get(readiness.get("state", ""), "ready" if snapshot["ready"] else "starting")
    css = "ready" if readiness.get("ready", snapshot["ready"]) else "notready"
    ready = f'<span class="{css}">{html.escape(label)}</span>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncd</title><style>{_STYLE}</style></head><body>
<header><h1>syncd</h1><span>{html.escape(__version__)}</span><span>{ready}</span>
<span>up {_ago(snapshot.get("started_at", now), now).removesuffix(" ago")}</span></header>
<main>{sections or "<p>No targets configured.</p>"}
<section><h2>Recent events</h2>{_events(snapshot.get("events", []), now)}</section>
<p><a href="metrics">metrics</a> &middot; <a href="api/status">api/status</a> &middot;
<a href="healthz">healthz</a> &middot; <a href="readyz">readyz</a></p></main>
</body></html>"""


# A delivery's body is a small JSON object; anything larger is not from MLflow.
_MAX_WEBHOOK_BODY = 1 << 20


async def _webhook(request: web.Request) -> web.Response:
    """MLflow's signed webhooks: a verified delivery wakes the reconciler for a poll now."""
    daemon = request.app[DAEMON]
    secret = daemon.settings.http.webhook_secret
    if secret is None:
        daemon.webhook_rejected("http.webhook_secret is not set")
        return web.json_response(
            {"error": "webhooks are off: set http.webhook_secret (SYNCD_HTTP__WEBHOOK_SECRET)"},
            status=403,
        )
    if (request.content_length or 0) > _MAX_WEBHOOK_BODY:
        daemon.webhook_rejected(f"body of {request.content_length} bytes")
        return web.json_response({"error": "body too large"}, status=413)
    try:
        # A chunked body states no length: aiohttp stops it at client_max_size while reading.
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        daemon.webhook_rejected(f"chunked body over {_MAX_WEBHOOK_BODY} bytes")
        return web.json_response({"error": "body too large"}, status=413)
    except (aiohttp.ClientPayloadError, ConnectionError) as exc:
        daemon.webhook_rejected(f"body not received whole ({type(exc).__name__})")
        raise
    try:
        check_delivery(secret.get_secret_value(), request.headers, body, time.time())
    except WebhookRejectedError as exc:
        daemon.webhook_rejected(exc.reason)
        return web.json_response({"error": str(exc)}, status=401)
    daemon.webhook_received(describe_delivery(body), delivery_model(body))
    return web.json_response({"accepted": True})


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=render_page(snapshot(request.app[DAEMON])), content_type="text/html")


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(client_max_size=_MAX_WEBHOOK_BODY)
    app[DAEMON] = daemon
    app.router.add_get("/", _page)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/status", _status)
    app.router.add_post("/webhooks/mlflow", _webhook)
    return app


async def serve(
    daemon: Daemon, host: str, port: int, guard: ConnectionGuard | None = None
) -> GuardedServer:
    """Start serving in the background, through the connection guard; the caller cleans the
    server up."""
    http = daemon.settings.http
    guard = guard or ConnectionGuard(http.max_connections, http.header_timeout)
    # Idle keep-alive connections (after a request) go after 15 s; before the first request
    # the guard's head timeout applies.
    runner = web.AppRunner(build_app(daemon), access_log=None, keepalive_timeout=15.0)
    await runner.setup()
    assert runner.server is not None
    return await start_guarded(runner.server, runner.cleanup, host, port, guard)
