"""The studio's front door: one ASGI middleware in front of every route (Gradio's and the A1111
API's), so that a rule holds for every route form at once, not for the one someone thought of.

Deny by default:

- **Other sites.** A request whose `Origin` names another site is refused (403), on every route and
  method: a page elsewhere cannot generate, log in, upload, interrupt or read with the user's cookie.
  Origins the user lists (`--cors-allow`) are let through, with CORS headers; no other origin gets
  any (Gradio's own CORS layer, which echoes any origin on a LAN or Space address, sits behind this).
- **Other host names.** A studio bound to loopback answers only to loopback names (and the hosts of
  the listed origins; any name with --share): a DNS-rebinding page reaches it under a name of its own.
- **Anonymous callers.** With logins, only the login page, its static assets and the login form
  answer a caller without a valid session cookie or HTTP Basic login.
- **The outputs folder.** No route serves a path inside it (every user's images, `history.sqlite3`);
  the page shows copies (`published.py`). Gradio's `blocked_paths` holds it too.
- **Bodies.** A body larger than the server's limit is refused before it is read.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from starlette.datastructures import Headers

from studio.logins import login_of

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HISTORY_DB = "history.sqlite3"
# What an anonymous caller may reach when logins are on: the login page, its form and assets.
_ANONYMOUS_PATHS = ("/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt",
                    "/manifest.json", "/gradio_api/theme.css")
_ANONYMOUS_PREFIXES = ("/assets/", "/svelte/", "/static/", "/pwa_icon")
_FILE_ROUTE_MARKERS = ("/file=", "/file/")


class Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


class Guard:
    """ASGI middleware; `gradio_app` is the Gradio App whose session cookies it reads."""

    def __init__(self, app, gradio_app, settings):
        self.app = app
        self.gradio_app = gradio_app
        self.logins = tuple(settings.auth)
        self.outputs_dir = Path(settings.outputs_dir).resolve()
        self.allowed_origins = {origin.rstrip("/").lower() for origin in settings.cors_allow}
        # A share link reaches a loopback studio under gradio.live's name: that one is asked for.
        self.loopback_only = settings.host in LOOPBACK_NAMES and not settings.share
        self.extra_hosts = {urlsplit(origin).hostname for origin in self.allowed_origins}
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        try:
            self._check_host(headers)
            if origin is not None and not self._same_site(origin, headers) and not self._listed(origin):
                raise Refusal(403, "CrossSiteRequest",  # a cookie of this studio may ride along: refused
                              f"This studio refuses requests from other sites (Origin: {origin[:100]}). To let a page "
                              "at that address use it, start the studio with --cors-allow ORIGIN.")
            if scope["type"] == "http" and scope["method"] == "OPTIONS" and origin is not None \
                    and "access-control-request-method" in headers:
                await self._preflight(origin, headers, send)
                return
            self._check_login(scope, headers)
            self._check_path(scope["path"])
            if scope["type"] == "http":
                self._check_body_size(headers)
        except ValueError:  # urlsplit's answer to a port like :abc or :99999, or an unclosed [::1
            await _refuse(scope, send, Refusal(400, "BadHeader", "The request's Host or Origin header is malformed."))
            return
        except Refusal as refusal:
            await _refuse(scope, send, refusal)
            return
        if origin is not None and self._listed(origin):
            send = _with_cors(send, origin)
        if self.logins and scope["type"] == "http" and scope["path"] == "/" and not self._logged_in(headers):
            # Gradio's login page carries the whole API's description; an anonymous caller gets none.
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]}
            send = _without_api_info(send)
        await self.app(scope, _capped(receive, self.max_body) if scope["type"] == "http" else receive, send)

    # --- the checks -----------------------------------------------------------------------------

    def _check_host(self, headers: Headers) -> None:
        if not self.loopback_only:
            return
        name = _hostname(headers.get("host", ""))
        if name not in LOOPBACK_NAMES and name not in self.extra_hosts and not _is_loopback_ip(name):
            raise Refusal(403, "UnknownHost", f"This studio serves this machine only and does not answer to the name "
                                              f"{name[:100]!r}. Open it at http://127.0.0.1 or http://localhost.")

    def _same_site(self, origin: str, headers: Headers) -> bool:
        """The Origin names the host the request was sent to (behind a proxy: the forwarded host)."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null" (a sandboxed frame, a file:// page) and the like
        for host in (headers.get("host"), headers.get("x-forwarded-host")):
            if not host:
                continue
            target = urlsplit(f"//{host.split(',')[0].strip()}")
            # A browser leaves the port out of Host only for its scheme's default (80, 443), so a Host
            # without one matches only an Origin without one: a page on :3000 of the same host is another site.
            if target.hostname == parts.hostname.lower() and target.port == parts.port:
                return True
        return False

    def _listed(self, origin: str) -> bool:
        return origin.rstrip("/").lower() in self.allowed_origins

    def _check_login(self, scope, headers: Headers) -> None:
        if not self.logins or self._logged_in(headers):
            return
        path = scope["path"]
        if path in _ANONYMOUS_PATHS or path.startswith(_ANONYMOUS_PREFIXES):
            return
        client = (scope.get("client") or ("",))[0]
        if path == "/gradio_api/startup-events" and _is_loopback_ip(client):
            return  # Gradio's launch() calls it on itself
        raise Refusal(401, "NotAuthenticated", "This studio asks for a login: log in on its page, or send HTTP Basic "
                                               "auth with a user and password it knows.")

    def _logged_in(self, headers: Headers) -> bool:
        return login_of(headers, self.logins, self.gradio_app) is not None

    def _check_path(self, path: str) -> None:
        """No route form names a file inside the outputs folder, nor the history database anywhere."""
        decoded = path
        for _ in range(3):  # %252F and the like: decode until nothing changes
            decoded, previous = unquote(decoded), decoded
            if decoded == previous:
                break
        if HISTORY_DB in decoded or any(self._inside_outputs(target) for target in _file_targets(decoded)):
            raise Refusal(403, "PrivateFile", "Images of the outputs folder are served only to the user who made them, "
                                              "through the page; the history database is never served.")

    def _inside_outputs(self, target: str) -> bool:
        try:
            return Path(target).resolve().is_relative_to(self.outputs_dir)  # relative: from the cwd, as Gradio
        except (OSError, ValueError, RuntimeError):
            return True  # a path that cannot even be resolved is not served either

    def _check_body_size(self, headers: Headers) -> None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            raise Refusal(413, "BodyTooLarge", f"The request body is {length} bytes; this studio takes at most "
                                               f"{self.max_body // 2**20} MB (set by --max-upload-mb).")

    async def _preflight(self, origin: str, headers: Headers, send) -> None:
        """A listed origin's CORS preflight (an unlisted one was refused above)."""
        response_headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", headers.get("access-control-request-headers", "").encode("latin-1")),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": b""})


def _file_targets(path: str) -> list[str]:
    """What each file route form in `path` names: `/gradio_api/file=<p>`, `/gradio_api/file/<p>`."""
    targets = []
    for marker in _FILE_ROUTE_MARKERS:
        if marker in path:
            targets.append(path.split(marker, 1)[1])
    return targets


def _hostname(host: str) -> str:
    return (urlsplit(f"//{host}").hostname or "") if host else ""


def _is_loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _capped(receive, limit: int):
    """`receive` that ends the request (as a client disconnect) once a body without a
    Content-Length passes `limit` bytes."""
    seen = 0

    async def capped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message
    return capped


_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)


def _without_api_info(send):
    """`send` for Gradio's HTML page with its `window.gradio_api_info` emptied (the page is small
    and uncompressed: the request went down without Accept-Encoding)."""
    start: dict = {}
    chunks: list[bytes] = []

    async def filtered(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = _API_INFO.sub(b"window.gradio_api_info = {};</script>", b"".join(chunks), count=1)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return filtered


def _with_cors(send, origin: str):
    async def cors_send(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", [])
                       if not k.lower().startswith(b"access-control-allow-")]
            headers += [(b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]
            message = {**message, "headers": headers}
        await send(message)
    return cors_send


async def _refuse(scope, send, refusal: Refusal) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": str(refusal)[:120]})
        return
    body = json.dumps({"error": refusal.kind, "detail": str(refusal)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401 and scope["path"].startswith(("/sdapi/", "/controlnet/")):
        headers.append((b"www-authenticate", b'Basic realm="SD Studio"'))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
