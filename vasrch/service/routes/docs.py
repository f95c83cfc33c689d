"""/docs (Swagger UI) and /redoc, with their JavaScript, CSS and icon served by the service
itself from the files the `fastapi-offline` package ships: the pages work offline and behind
a firewall. They are open to all; the API calls they make need the token, which Swagger UI's
"Authorize" button sends (the document declares the bearer scheme)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_PATH = "/docs-assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
# Swagger UI keeps the token across reloads and asks no outside validator about the document.
SWAGGER_PARAMETERS = {"persistAuthorization": True, "validatorUrl": None}

router = APIRouter(include_in_schema=False)


def mount_assets(app: FastAPI) -> None:
    """Serve the pages' assets under ASSETS_PATH."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}{ASSETS_PATH}/{name}"


def _document(request: Request) -> str:
    return f"{request.scope.get('root_path', '').rstrip('/')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_document(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset(request, SWAGGER_JS),
        swagger_css_url=_asset(request, SWAGGER_CSS),
        swagger_favicon_url=_asset(request, FAVICON),
        oauth2_redirect_url=None,
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_document(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, REDOC_JS),
        redoc_favicon_url=_asset(request, FAVICON),
        with_google_fonts=False,
    )
