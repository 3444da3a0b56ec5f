"""``cir ui``: a search page for one Weaviate collection, served by FastAPI.

Why FastAPI and not Gradio, the usual choice for demos in this field: the service is already
FastAPI (one framework, one set of conventions), Gradio would add a large dependency tree and
a JavaScript front end that tries to reach the internet, and a server-rendered page with plain
forms is simple to drive from a headless browser in the tests. The page itself is in
``integration.ui_page``.

Every query goes through the Weaviate Python client, as the snippet of docs/search.md does
(``integration.search.composed_search``): ``nearText`` with the composed-query string, the
reference left out, optionally Weaviate's ``rerank``. The page shows the results in the order
Weaviate returned them.

References come from the collection (by UUID) or from an upload; an upload is kept in memory
(the last :data:`UPLOADS_KEPT`) under ``upload:<content UUID>``, so that the same upload can be
queried again with another text. Bad input (no reference, no text, a file that is no image or
is too large, an unknown UUID) is answered with the page, its ``#error`` saying what was wrong,
and a 4xx status; Weaviate failing is a 502 with Weaviate's message.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from weaviate import WeaviateClient
from weaviate.collections import Collection
from weaviate.exceptions import WeaviateBaseError

from cir_module.errors import InputError
from cir_module.images import ImageLimits, decode_base64_image
from cir_module.service.body import describe_errors
from integration.contact_sheet import jpeg_data_url
from integration.enrich import blob_text
from integration.folder_ingest import content_uuid, image_problem
from integration.search import SearchResult, composed_search, stored_image
from integration.ui_page import Example, PageState, ResultTile, Thumb, render_page

__all__ = ["DEFAULT_UI_PORT", "UPLOADS_KEPT", "UIConfig", "create_ui_app", "serve_ui"]

log = logging.getLogger(__name__)

# Gradio's port: where people of this field look for a demo page.
DEFAULT_UI_PORT = 7860
UPLOADS_KEPT = 32
UPLOAD_PREFIX = "upload:"
THUMB_SIDE = 192
STRIP_SIDE = 96
# Room for the form's other fields and the multipart framing around one upload.
FORM_OVERHEAD_BYTES = 64 * 1024
TEXT_PROPERTIES = ("path", "title")


@dataclass(frozen=True)
class UIConfig:
    """What the page searches and how: the collection, the service's image limits (an upload
    beyond them is refused here, with the reason), the default and largest number of results,
    how many images one page of the collection strip shows, and the demo's examples."""

    collection: str
    limits: ImageLimits = field(default_factory=ImageLimits)
    default_limit: int = 10
    max_limit: int = 50
    browse_page: int = 12
    image_property: str = "image"
    examples: Sequence[Example] = ()
    # The stored captions a change verifier reads (``rerank`` on them; each result's
    # rationale shown on demand); None: rerank on the image.
    caption_property: str | None = None


class _PageError(Exception):
    """A request the page answers with its ``#error`` and this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Uploads:
    """The last few uploaded references, by key (thread-safe: handlers run in a pool)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes) -> str:
        key = UPLOAD_PREFIX + content_uuid(data)
        with self._lock:
            self._items[key] = (name, data)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._items.get(key)


@dataclass(frozen=True)
class _Reference:
    key: str  # what the form sends back
    label: str
    data: bytes
    stored: str | None  # the object's UUID when picked from the collection


def create_ui_app(connect: Callable[[], WeaviateClient], config: UIConfig) -> FastAPI:
    """The page's application. ``connect`` opens the Weaviate client (in ``lifespan``; it is
    closed on shutdown)."""
    uploads = _Uploads(UPLOADS_KEPT)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect()
        try:
            if not client.collections.exists(config.collection):
                raise RuntimeError(f"no collection {config.collection} in Weaviate")
            collection = client.collections.get(config.collection)
            names = {p.name for p in collection.config.get().properties}
            app.state.collection = collection
            # A collection of cir ingest has both; others may lack one (asking would fail).
            app.state.text_properties = tuple(p for p in TEXT_PROPERTIES if p in names)
            if config.caption_property and config.caption_property not in names:
                raise RuntimeError(
                    f"{config.collection} has no {config.caption_property!r} property: caption "
                    "it first (cir enrich)"
                )
            yield
        finally:
            client.close()

    app = FastAPI(title="weaviate-cir search page", lifespan=lifespan, docs_url=None)

    @app.middleware("http")
    async def bounded_body(request: Request, call_next: Callable) -> Response:
        # The multipart parser would spool any upload to disk first: refuse by its declared
        # length before reading it (the file's own check follows in the handler).
        declared = request.headers.get("content-length", "")
        cap = config.limits.max_bytes
        if cap is not None and declared.isdigit() and int(declared) > cap + FORM_OVERHEAD_BYTES:
            return JSONResponse(
                {"error": f"request of {declared} bytes: an upload may have {cap} bytes"}, 413
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {describe_errors(exc.errors())}"}, 422)

    @app.get("/", response_class=HTMLResponse)
    def page(
        request: Request,
        ref: str = "",
        text: str = "",
        rerank: bool = False,
        limit: Annotated[int | None, Query()] = None,
        browse: Annotated[int, Query(ge=0)] = 0,
    ) -> HTMLResponse:
        """The page; with a reference and a text (a link from a result or an example) the
        query runs at once."""
        state = _state(config, text=text, rerank=rerank, limit=limit, browse=browse)
        return _respond(
            request, config, state, lambda: _resolve(_collection_of(request), uploads, ref)
        )

    @app.post("/search", response_class=HTMLResponse)
    def search(
        request: Request,
        ref: Annotated[str, Form()] = "",
        text: Annotated[str, Form()] = "",
        rerank: Annotated[bool, Form()] = False,
        limit: Annotated[int | None, Form()] = None,
        upload: Annotated[UploadFile | None, File()] = None,
    ) -> HTMLResponse:
        """The form: an uploaded file replaces the current reference."""
        state = _state(config, text=text, rerank=rerank, limit=limit, browse=0)

        def reference() -> _Reference | None:
            if upload is not None and upload.filename:
                return _accept_upload(upload, config.limits, uploads)
            return _resolve(_collection_of(request), uploads, ref)

        return _respond(request, config, state, reference, require_text=True)

    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, str]:
        """The page is up and its collection is there."""
        return {"status": "ok", "collection": _collection_of(request).name}

    return app


def _collection_of(request: Request) -> Collection:
    """The collection the page searches (opened in ``lifespan``)."""
    return request.app.state.collection


def _state(
    config: UIConfig, *, text: str, rerank: bool, limit: int | None, browse: int
) -> PageState:
    return PageState(
        collection=config.collection,
        text=text.strip(),
        rerank=rerank,
        limit=config.default_limit if limit is None else limit,
        max_limit=config.max_limit,
        examples=config.examples,
        browse_offset=browse,
        browse_page=config.browse_page,
    )


def _respond(
    request: Request,
    config: UIConfig,
    state: PageState,
    reference: Callable[[], _Reference | None],
    *,
    require_text: bool = False,
) -> HTMLResponse:
    """Resolve the reference, run the query when there is one and a text, render the page;
    a :class:`_PageError` becomes the page with its message and status."""
    collection = _collection_of(request)
    status = 200
    try:
        ref = reference()
        if ref is not None:
            state = replace(
                state,
                reference=ref.key,
                reference_label=ref.label,
                reference_src=_data_url(base64.b64encode(ref.data).decode("ascii"), THUMB_SIDE),
            )
        if require_text or (ref is not None and state.text):
            _check_query(state, ref, config)
            assert ref is not None
            result = composed_search(
                collection,
                ref.data,
                state.text,
                limit=state.limit,
                rerank=state.rerank,
                with_images=True,
                exclude=ref.stored,
                label=ref.label,
                text_properties=request.app.state.text_properties,
                image_property=config.image_property,
                caption_property=config.caption_property,
            )
            state = replace(state, results=_tiles(result, state, config), excluded=result.excluded)
    except _PageError as exc:
        status, state = exc.status, replace(state, error=exc.message)
    except WeaviateBaseError as exc:
        log.warning("Weaviate failed: %s", exc)
        status, state = 502, replace(state, error=f"Weaviate failed: {exc}")
    try:
        state = _with_strip(request, config, state)
    except WeaviateBaseError as exc:  # the page still shows what it has, and says why
        status, state = 502, replace(state, error=state.error or f"Weaviate failed: {exc}")
    return HTMLResponse(render_page(state), status_code=status)


def _check_query(state: PageState, ref: _Reference | None, config: UIConfig) -> None:
    if ref is None:
        raise _PageError(400, "choose a reference: upload an image or pick one below")
    if not state.text:
        raise _PageError(400, "type the modification: what should change in the reference")
    if not 1 <= state.limit <= config.max_limit:
        raise _PageError(400, f"results must be between 1 and {config.max_limit}")


def _resolve(collection: Collection, uploads: _Uploads, key: str) -> _Reference | None:
    """The reference a form or link names: an upload kept here, a stored object, or none."""
    key = key.strip()
    if not key:
        return None
    if key.startswith(UPLOAD_PREFIX):
        kept = uploads.get(key)
        if kept is None:
            raise _PageError(404, "that upload is no longer kept here: upload it again")
        return _Reference(key, kept[0], kept[1], None)
    try:
        uuidlib.UUID(key)
    except ValueError:
        raise _PageError(400, f"not an object id (a UUID): {key[:80]!r}") from None
    data = stored_image(collection, key)
    if data is None:
        raise _PageError(404, f"no object {key} in {collection.name}")
    return _Reference(key, f"{collection.name} {key[:8]}…", data, key)


def _accept_upload(upload: UploadFile, limits: ImageLimits, uploads: _Uploads) -> _Reference:
    """An uploaded file, checked as the service would check it, kept for later queries."""
    cap = limits.max_bytes
    # Read at most one byte past the limit: a huge upload is refused without holding it all.
    data = upload.file.read(cap + 1 if cap is not None else -1)
    name = upload.filename or "upload"
    if not data:
        raise _PageError(400, f"{name}: the file is empty")
    if cap is not None and len(data) > cap:
        raise _PageError(413, f"{name}: larger than the service accepts ({cap} bytes)")
    problem = image_problem(data, limits)
    if problem is not None:
        raise _PageError(400, f"{name}: {problem}")
    return _Reference(uploads.put(name, data), name, data, None)


def _tiles(result: SearchResult, state: PageState, config: UIConfig) -> list[ResultTile]:
    targets = {
        e.target
        for e in config.examples
        if (e.reference, e.text) == (state.reference, state.text) and e.target
    }
    return [
        ResultTile(
            Thumb(hit.uuid, _data_url(hit.image or "", THUMB_SIDE), hit.title or ""),
            hit.rank,
            hit.scores(),
            path=hit.path or "",
            target=hit.uuid in targets,
            first_rank=hit.first_rank,
            rationale=(
                (result.reference_caption, hit.changes)
                if result.reference_caption and hit.changes
                else None
            ),
        )
        for hit in result.hits
    ]


def _with_strip(request: Request, config: UIConfig, state: PageState) -> PageState:
    """The state with one page of the collection's images for picking a reference."""
    collection = _collection_of(request)
    page = collection.query.fetch_objects(
        limit=config.browse_page + 1,  # one more tells whether there is a next page
        offset=state.browse_offset,
        return_properties=[config.image_property, *request.app.state.text_properties],
    )
    shown = page.objects[: config.browse_page]
    strip = [
        Thumb(
            str(obj.uuid),
            _data_url(blob_text(obj.properties.get(config.image_property)), STRIP_SIDE),
            str(obj.properties.get("title") or ""),
        )
        for obj in shown
    ]
    count = collection.aggregate.over_all(total_count=True).total_count
    return replace(state, browse=strip, browse_more=len(page.objects) > len(shown), objects=count)


def _data_url(encoded: str, side: int) -> str:
    """A stored (base64) image as a thumbnail ``data:`` URL; one that does not decode shows
    as an empty image rather than failing the page."""
    try:
        return jpeg_data_url(decode_base64_image(encoded, "stored image"), side)
    except InputError:
        return ""


def serve_ui(
    connect: Callable[[], WeaviateClient],
    config: UIConfig,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_UI_PORT,
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serve the page until Ctrl-C or SIGTERM, then return (the caller's ``with`` blocks, such
    as ``cir demo --ui``'s Weaviate and service, then stop in order)."""
    import uvicorn

    app = create_ui_app(connect, config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    on_ready(f"search page for {config.collection}: http://{host}:{port}/  (Ctrl-C stops it)")
    # uvicorn shuts down on SIGINT / SIGTERM and then raises the signal again for the handler
    # that was there before; Python's default one for SIGTERM would end the process on the
    # spot, leaving the caller's child processes behind. This one only notes it.
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: caught.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught:
        log.info("%s received: the search page stopped", signal.Signals(caught[0]).name)
    if not server.started:
        raise RuntimeError(f"the search page could not start on {host}:{port} (see above)")
