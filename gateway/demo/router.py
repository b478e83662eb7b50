"""Serves the demo page at /demo/ from files shipped in the package (no build step, no CDN).

The page calls the API from the browser with the key the person enters, so it needs no
server-side state and no route of its own beyond these files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Everything comes from this origin; camera frames and previews are blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small and changes with the package version: always revalidate.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _files() -> dict[str, Path]:
    # A fixed list read once: a request can only name one of these, never a path.
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}


FILES = _files()


@router.get("/demo")
async def demo_redirect() -> RedirectResponse:
    # The page's relative links (app.js, ../v1/...) need the trailing slash.
    return RedirectResponse("demo/", status_code=308)


@router.get("/demo/")
async def demo_index() -> FileResponse:
    return _serve("index.html")


@router.get("/demo/{name}")
async def demo_file(name: str) -> FileResponse:
    return _serve(name)


def _serve(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(status_code=404)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
