"""Who sent a request, when logins are on: a login of --auth, named by HTTP Basic (as Open WebUI and
webuiapi send it) or by the page's session cookie (Gradio's tokens). The guard in front of every
route and the A1111 API's caller both ask here, so the two cannot disagree."""

from __future__ import annotations

import base64
import binascii
import secrets

from starlette.datastructures import Headers
from starlette.requests import cookie_parser


def login_of(headers: Headers, logins, gradio_app) -> str | None:
    """The user a request logs in as, or None. A Basic header decides alone when it is sent."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # Compared as bytes: compare_digest refuses str that is not ASCII.
        known = any(secrets.compare_digest(user.encode(), u.encode()) and
                    secrets.compare_digest(password.encode(), p.encode()) for u, p in logins)
        return user if known else None
    cookie_id = getattr(gradio_app, "cookie_id", None)
    cookies = cookie_parser(headers.get("cookie", ""))
    tokens = getattr(gradio_app, "tokens", {})
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if cookies.get(name) in tokens:
            return tokens[cookies[name]]
    return None
