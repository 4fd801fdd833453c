"""The demo's web app: `GET /` the page (static/index.html), `GET /api/info` which model
answers and the upload limit, `POST /api/caption` the captions of the image sent as the
request body.

The image travels as the raw body (the file's name in the `X-Filename` header, %-encoded)
rather than as a multipart form, which FastAPI could only parse with one more dependency
(python-multipart). Every refusal is JSON `{"error": message}` with a 4xx status.

Memory is bounded: at most `DECODE_SLOTS` uploads are decoded and captioned at once (the others
wait their turn), each decoded reduced (`imcap.demo.uploads`), and the memory of each is handed
back to the system when it is done (`release_memory`): about `DECODE_SLOTS` × 4 bytes ×
`MAX_PIXELS` (400 MB) above the model, whatever the number of requests."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Mapping
from dataclasses import asdict
from importlib.resources import files
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from imcap.captioner import Captioner, Decoding
from imcap.demo.shown_captions import caption_image
from imcap.demo.uploads import UploadError, read_upload, too_large

PAGE = files("imcap.demo").joinpath("static", "index.html")
DEFAULT_NAME = "upload"
DECODE_SLOTS = 2  # uploads decoded and captioned at once
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_memory() -> None:
    """Hand freed memory back to the system: glibc keeps what a thread freed in that thread's
    arena (an image's hundreds of MB per worker thread) unless asked to trim it."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):  # glibc only
        _LIBC.malloc_trim(0)


async def read_body(request: Request, name: str, max_bytes: int) -> bytes:
    """The request body, refused as soon as it (or its announced length) passes `max_bytes`."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise too_large(name, max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large(name, max_bytes)
    return bytes(body)


def create_app(captioner: Captioner, model: Mapping[str, str], decodings: Mapping[str, Decoding],
               max_bytes: int) -> FastAPI:
    """`model` describes the model to the user (source, encoder, attention, …); `decodings`
    are the rules each image is captioned with, by the name the page shows."""
    app = FastAPI(title="imcap demo", docs_url=None, redoc_url=None, openapi_url=None)
    page = PAGE.read_text(encoding="utf-8")
    slots = asyncio.Semaphore(DECODE_SLOTS)

    @app.exception_handler(UploadError)
    async def refuse(_: Request, err: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/info")
    async def info() -> dict:
        return {"model": model, "max_upload_bytes": max_bytes}

    @app.post("/api/caption")
    async def caption(request: Request) -> dict:
        name = unquote(request.headers.get("x-filename", "")).strip() or DEFAULT_NAME
        data = await read_body(request, name, max_bytes)
        async with slots:
            try:
                upload = await run_in_threadpool(read_upload, data, name, max_bytes)
                del data
                captions = await run_in_threadpool(caption_image, captioner, upload.image,
                                                   decodings)
                size = upload.width, upload.height
                del upload
            finally:
                await run_in_threadpool(release_memory)
        return {"image": name, "width": size[0], "height": size[1],
                "model": model, "captions": [asdict(c) for c in captions]}

    return app
