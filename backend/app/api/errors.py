"""Error answers the framework gets wrong or leaves bare: 405 without every allowed method, and 500."""

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import Match

# In the order an Allow header lists them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install(app: FastAPI) -> None:
    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(Exception, internal_error)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 naming every method the path has (RFC 9110): Starlette names only those of the first
    route that matched it, so GET and HEAD, being two routes, were never both listed."""
    routes = request.app.router.routes
    allowed = [m for m in METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(allowed)})


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug's 500: the body says no more than that (the traceback goes to the log), and it carries
    the request id, which the response would otherwise lack, being made outside the middleware."""
    return JSONResponse({"detail": "Internal Server Error"}, 500, headers={"X-Request-ID": correlation_id.get() or ""})
