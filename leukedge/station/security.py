"""Who may use the station's page: the token rule, cross-site checks, response headers.

- Bound to a loopback address, the page needs no token, but only requests naming a
  loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) are served, so a web site that
  rebinds its own name to 127.0.0.1 (DNS rebinding) gets nothing.
- Bound to any other address, a token is required (``check_bind``). Every request, the
  live stream and static files included, must carry it: ``Authorization: Bearer T``, an
  ``X-Leukedge-Token`` header, or the cookie (``COOKIE_DAYS``, HttpOnly, SameSite=Strict)
  set by opening any page with ``?token=T``, which then redirects to it without the
  token. Tokens are compared in constant time.
- State-changing requests are POST only (the routes allow nothing else) and must be
  ``application/json`` (which an HTML form on another site cannot send without a CORS
  preflight, never granted here) and, when the browser says where they come from
  (``Sec-Fetch-Site``, ``Origin``), come from this page itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import LeukedgeError

TOKEN_COOKIE = "leukedge_token"
TOKEN_HEADER = "x-leukedge-token"
#: How long a browser keeps the token after a ``?token=`` login (a tablet in the lab).
COOKIE_DAYS = 30
#: The shortest token accepted: 16 characters (``secrets.token_urlsafe(16)`` gives 22).
MIN_TOKEN = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

#: Content-Security-Policy of the page: nothing from elsewhere, no inline script or style.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: Content-Security-Policy of a self-contained report: its own inline style and images only.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}


class ServeError(LeukedgeError, ValueError):
    """Settings that would make the page unsafe (another address without a token)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """The token to require (None: none) for a server bound to ``host``; ``ServeError``
    for another address without a token, or a token too short to resist guessing."""
    if token:
        if len(token) < MIN_TOKEN:
            raise ServeError(
                f"the token has {len(token)} characters; use at least {MIN_TOKEN}, "
                f"e.g. {secrets.token_urlsafe(16)}"
            )
        return token
    if not is_loopback(host):
        raise ServeError(
            f"--host {host} makes the page reachable from other machines: give a token "
            "(--token, $LEUKEDGE_TOKEN or token in the config), e.g. "
            f"{secrets.token_urlsafe(16)}, or bind to 127.0.0.1"
        )
    return None


def _host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8080`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _login_page(status: int, message: str) -> HTMLResponse:
    """A page asking for the token (no script, no external resource)."""
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>leukedge station: token</title><style>body{font:16px system-ui,sans-serif;"
        "margin:3em auto;max-width:28em;padding:0 1em}input{font-size:1em;padding:.3em;"
        "width:100%;box-sizing:border-box;margin:.5em 0}</style></head><body>"
        f"<h1>leukedge station</h1><p>{message}</p>"
        "<form method='get'><label>Station token<input name='token' type='password' "
        "autocomplete='current-password' autofocus></label><button>Open</button></form>"
        "</body></html>"
    )
    csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    return HTMLResponse(body, status, headers={"content-security-policy": csp})


class Guard:
    """ASGI middleware applying the rules of the module doc to every HTTP request, and
    adding the security headers (and the page's CSP, unless a route set its own)."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refusal(scope)
        target = refused or self.app

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = dict(HEADERS)
                if b"content-security-policy" not in names:
                    extra["content-security-policy"] = PAGE_CSP
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ]
            await send(message)

        await target(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request, or None to let it through."""
        headers = Headers(scope=scope)
        method = scope["method"]
        host = _host_name(headers.get("host", ""))
        if self.token is None and host not in LOOPBACK_NAMES:
            return JSONResponse({"error": f"host {host!r} refused: open the page as "
                                 "http://127.0.0.1:PORT/"}, 421)  # fmt: skip
        if self.token is not None:
            given = self._token_of(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return self._unauthorised(scope, headers, given is not None)
        if method in ("GET", "HEAD"):
            return self._login(scope)
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        expected = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin != expected
        ):
            return JSONResponse({"error": "cross-site request refused"}, 403)
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return JSONResponse({"error": "send the request as application/json"}, 415)
        return None

    def _token_of(self, scope: Scope, headers: Headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        if TOKEN_HEADER in headers:
            return headers[TOKEN_HEADER]
        if scope["method"] in ("GET", "HEAD"):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if "token" in query:
                return query["token"]
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            return None
        return cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None

    def _unauthorised(self, scope: Scope, headers: Headers, wrong: bool) -> Response:
        message = "Wrong token; try again." if wrong else "Enter the station's token."
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            return _login_page(401, message)
        return JSONResponse({"error": f"{message} (Authorization: Bearer TOKEN)"}, 401,
                            headers={"www-authenticate": "Bearer"})  # fmt: skip

    def _login(self, scope: Scope) -> Response | None:
        """A GET with a valid ``?token=``: set the cookie and go to the page without it."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if self.token is None or not any(k == "token" for k, _ in query):
            return None
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        path = "/" + scope["path"].lstrip("/")  # never "//host": a redirect off the station
        response = RedirectResponse(path + (f"?{rest}" if rest else ""), 303)
        response.set_cookie(TOKEN_COOKIE, self.token, max_age=COOKIE_DAYS * 86400,
                            httponly=True, samesite="strict")  # fmt: skip
        return response
