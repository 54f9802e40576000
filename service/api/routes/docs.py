"""The API's description: /openapi.json built for the app's models, and Swagger UI at /docs
served from the swagger-ui-bundle package, so /docs works with no internet."""

from __future__ import annotations

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from service.api.openapi import OpenApiDocument
from service.api.paths import STATIC_PREFIX
from service.api.state import StateDep

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="seqcast API",
        swagger_js_url=f"{root}{STATIC_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_PREFIX}/favicon-32x32.png",
    )


def openapi_router(document: OpenApiDocument) -> APIRouter:
    """/openapi.json of one app: its document, built for the models it serves."""
    per_app = APIRouter(include_in_schema=False)

    @per_app.get("/openapi.json")
    async def openapi(request: Request, state: StateDep) -> Response:
        root = request.scope.get("root_path", "")
        # The first build takes tens of milliseconds: off the event loop.
        body = await run_sync(document.json, state.repository, root)
        return Response(body, media_type="application/json")

    return per_app
