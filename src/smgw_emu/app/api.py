"""The HTTP API the gateway serves on its MANAGEMENT channel (5.16 "HTTP-Response versenden").

A small router: each route names its method, a path pattern and whether it is administrative
(needs the AUTH state). The aiohttp adapter turns an aiohttp request into an `ApiRequest`, the
route handler returns an `ApiResponse`; handlers never see aiohttp. docs/wan-api.md lists every
resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.web_request import BaseRequest
from lxml import etree

if TYPE_CHECKING:
    from smgw_emu.net.management import ManagementChannel

ERROR_NS = "urn:smgw-emu:error:1"


@dataclass
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    role: str = "gwa"
    channel: "ManagementChannel | None" = None


@dataclass
class ApiResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/xml"
    headers: dict[str, str] = field(default_factory=dict)


def error_body(code: str, message: str, field_name: str | None = None) -> bytes:
    root = etree.Element(f"{{{ERROR_NS}}}error", nsmap={None: ERROR_NS})
    root.set("code", code)
    etree.SubElement(root, f"{{{ERROR_NS}}}message").text = message
    if field_name:
        etree.SubElement(root, f"{{{ERROR_NS}}}field").text = field_name
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def error(status: int, code: str, message: str, field_name: str | None = None) -> ApiResponse:
    return ApiResponse(status, error_body(code, message, field_name))


class ApiError(Exception):
    """Raised by handlers for a 4xx/5xx answer; the router logs it and writes the error body."""

    def __init__(self, status: int, code: str, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field_name = status, code, field_name


Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    admin: bool = True
    name: str = ""


class Router:
    def __init__(self, *, journal: Callable[..., object], auth_refused_status: int = 403) -> None:
        self.routes: list[Route] = []
        self._journal = journal
        self.auth_refused_status = auth_refused_status

    def add(self, method: str, pattern: str, handler: Handler, *, admin: bool = True, name: str = "") -> None:
        """`pattern` is a regular expression with named groups, matched against the whole path."""
        self.routes.append(Route(method, re.compile(pattern + r"\Z"), handler, admin, name or pattern))

    async def dispatch(self, request: ApiRequest) -> ApiResponse:
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(request.path)
            if not match:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            if route.admin and (request.channel is None or not request.channel.authenticated()):
                self._journal("request-refused-no-auth", f"{request.method} {request.path} refused: not in AUTH state",
                              level=2, outcome=1, method=request.method, path=request.path)
                return error(self.auth_refused_status, "auth-required",
                             "administrative requests need the AUTH state (POST /smgw/auth)")
            request.params = match.groupdict()
            try:
                return await route.handler(request)
            except ApiError as exc:
                self._journal("request-failed", f"{request.method} {request.path}: {exc.status} {exc.code}: {exc}",
                              level=2, outcome=1, code=exc.code, status=exc.status,
                              **({"field": exc.field_name} if exc.field_name else {}))
                return error(exc.status, exc.code, str(exc), exc.field_name)
        if allowed:
            self._journal("request-failed", f"{request.method} {request.path}: 405 method not allowed", level=2, outcome=1,
                          code="method-not-allowed", status=405)
            return ApiResponse(405, error_body("method-not-allowed", f"{request.method} is not allowed on {request.path}"),
                               headers={"Allow": ", ".join(sorted(set(allowed)))})
        self._journal("request-failed", f"{request.method} {request.path}: 404 unknown resource", level=2, outcome=1,
                      code="unknown-resource", status=404)
        return error(404, "unknown-resource", f"no resource {request.path}")

    async def handle_aiohttp(self, raw: BaseRequest, channel: "ManagementChannel") -> web.StreamResponse:
        """The adapter between aiohttp and the router."""
        try:
            body = await raw.read()
        except web.HTTPRequestEntityTooLarge as exc:
            self._journal("request-failed", f"{raw.method} {raw.path}: body too large", level=2, outcome=1,
                          code="body-too-large", status=413)
            return _to_aiohttp(error(413, "body-too-large", str(exc.text or "request body exceeds the limit")))
        request = ApiRequest(raw.method, raw.path, dict(raw.query), dict(raw.headers), body, channel=channel)
        return _to_aiohttp(await self.dispatch(request))


def _to_aiohttp(response: ApiResponse) -> web.Response:
    return web.Response(status=response.status, body=response.body, content_type=response.content_type,
                        headers=response.headers)
