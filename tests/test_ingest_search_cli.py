"""Your own images: ``cir ingest`` of a folder of real photos (``skimage.data``) into a real
Weaviate through the real service, ``cir search`` with composed queries and contact sheets,
and ``cir up`` as a standing stack. The pure parts (folder scan, checks, sheets) run without
a server."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from weaviate.classes.query import Filter, MetadataQuery, Rerank

from cir_module import compose_query
from cir_module.cli import main
from cir_module.images import ImageLimits, decode_base64_image
from integration.contact_sheet import (
    HTML_SIDE,
    SheetLayout,
    SheetTile,
    render_html,
    render_png,
    thumbnail,
)
from integration.folder_ingest import (
    content_uuid,
    image_problem,
    ingest_folder,
    scan_folder,
    title_from_filename,
)
from integration.processes import free_port
from integration.stack import connect_to_url

ROOT = Path(__file__).resolve().parent.parent

# The photos, where they go and in which format: every format the service reads, in nested
# folders, each a different picture.
PHOTOS = {
    "people/astronaut.png": ("astronaut", "PNG"),
    "food/coffee.jpg": ("coffee", "JPEG"),
    "animals/cats/chelsea_the-cat.jpeg": ("chelsea", "JPEG"),
    "space/rocket.webp": ("rocket", "WEBP"),
    "misc/camera.BMP": ("camera", "BMP"),
    "misc/coins.gif": ("coins", "GIF"),
    "misc/logo.tiff": ("logo", "TIFF"),
}
# Files that must be skipped, and a word of the reason each must be given.
SKIPPED = {
    "food/duplicate/coffee.jpg": "same content as food/coffee.jpg",
    "broken/truncated.jpg": "the image could not be decoded",
    "broken/fake.png": "not an image the service reads",
    "broken/empty.png": "empty file",
    "notes/readme.txt": "unsupported file type (extension .txt)",
    "LICENSE": "unsupported file type (no extension)",
}


def _encode(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)())


def make_photo_folder(root: Path) -> Path:
    """The photos of ``PHOTOS`` plus the files of ``SKIPPED`` under ``root``."""
    for relative, (name, format) in PHOTOS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = _photo(name)
        if format == "GIF":
            image = image.convert("P")
        path.write_bytes(_encode(image, format))
    for relative in SKIPPED:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / "food/duplicate/coffee.jpg").write_bytes((root / "food/coffee.jpg").read_bytes())
    moon = _encode(_photo("moon"), "JPEG")
    (root / "broken/truncated.jpg").write_bytes(moon[: len(moon) // 3])
    (root / "broken/fake.png").write_bytes(b"this is a text file, not a picture\n" * 4)
    (root / "broken/empty.png").write_bytes(b"")
    (root / "notes/readme.txt").write_text("notes about the photos\n")
    (root / "LICENSE").write_text("public domain\n")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos")).resolve()


@pytest.fixture
def name(client) -> str:
    """A unique collection name, deleted afterwards whatever happens."""
    name = f"CIRPhotos_{uuidlib.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        client.collections.delete(name)


def _address(server) -> list[str]:
    return ["--weaviate", server.url, "--grpc-port", str(server.grpc_port)]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    """``cir argv`` in this process: exit code and what it printed (with the message it
    exited with, if any)."""
    code, message = 0, ""
    try:
        main(argv)
    except SystemExit as stop:
        code, message = (stop.code, "") if isinstance(stop.code, int) else (1, str(stop.code))
    return code, capsys.readouterr().out + message


def _same_reasons(skipped: list[tuple[str, str]]) -> bool:
    """Whether ``skipped`` names exactly the files of SKIPPED, each with its reason."""
    reasons = dict(skipped)
    return set(reasons) == set(SKIPPED) and all(
        reasons[path].startswith(reason) for path, reason in SKIPPED.items()
    )


# -- without a server ------------------------------------------------------------------------


def test_scan_finds_image_files_by_extension_in_nested_folders(photos):
    images, others = scan_folder(photos)
    relative = [p.relative_to(photos).as_posix() for p in images]
    assert images == sorted(images)
    image_like = [r for r in SKIPPED if Path(r).suffix.lower() in (".jpg", ".png")]
    assert set(relative) == set(PHOTOS) | set(image_like)
    assert dict(others) == {r: SKIPPED[r] for r in ("notes/readme.txt", "LICENSE")}


def test_image_problems_are_the_services_reasons(photos):
    limits = ImageLimits(max_bytes=10**7)
    for relative in PHOTOS:
        assert image_problem((photos / relative).read_bytes(), limits) is None, relative
    truncated = image_problem((photos / "broken/truncated.jpg").read_bytes(), limits)
    assert truncated.startswith("the image could not be decoded") and "truncated" in truncated
    assert "not an image the service reads" in image_problem(b"GIF is a word, not a file", limits)
    wide = _encode(Image.new("RGB", (2100, 100)), "PNG")
    assert "aspect ratio" in image_problem(wide, limits)
    assert "pixels" in image_problem(_encode(Image.new("L", (300, 300)), "PNG"),
                                     ImageLimits(max_pixels=10_000))  # fmt: skip


def test_titles_and_content_uuids():
    assert title_from_filename("animals/cats/chelsea_the-cat.jpeg") == "chelsea the cat"
    assert title_from_filename("IMG_0001.JPG") == "IMG 0001"
    assert content_uuid(b"abc") == content_uuid(b"abc") != content_uuid(b"abd")


def test_png_sheet_places_each_picture_in_its_tile():
    names = ["astronaut", "coffee", "rocket", "chelsea"]
    tiles = [SheetTile(_photo(n), (n, "second line", "a" * 200)) for n in names]
    layout = SheetLayout(len(tiles), columns=3)
    sheet = render_png(tiles, layout)
    assert sheet.size == layout.size and layout.rows == 2
    pictures = {n: _photo(n) for n in names}
    for index, name in enumerate(names):
        assert _closest_tile(sheet, layout, index, pictures) == name
    assert _blank(sheet, layout.square(len(names)))  # nothing after the last tile


def test_html_sheet_embeds_one_image_per_tile():
    tiles = [SheetTile(_photo(n), (f"<{n}>", n)) for n in ("coffee", "rocket")]
    page = render_html(tiles, "a <title>")
    images = _html_images(page)
    assert [alt for alt, _ in images] == ["coffee", "rocket"]
    assert all(image.format == "JPEG" for _, image in images)
    pictures = {n: _photo(n) for n in ("astronaut", "coffee", "rocket")}
    assert [_closest_picture(image, pictures) for _, image in images] == ["coffee", "rocket"]
    assert "&lt;coffee&gt;" in page and "<coffee>" not in page


def test_connect_to_url_refuses_what_is_not_an_http_url():
    with pytest.raises(ValueError, match="not a Weaviate URL"):
        connect_to_url("ftp://example.org")


# -- against the real Weaviate and the real service -----------------------------------------


@pytest.mark.integration
def test_ingest_reports_skips_and_a_rerun_adds_nothing(
    capsys, client, weaviate_server, service, photos, name
):
    code, out = _run(capsys, ["ingest", str(photos), "--collection", name,
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 0, out
    assert f"{len(PHOTOS)} added, 0 already stored, {len(SKIPPED)} skipped, 0 failed" in out
    for relative, reason in SKIPPED.items():
        assert f"  {relative}: {reason}" in out
    collection = client.collections.get(name)
    assert len(collection) == len(PHOTOS)
    stored = {
        str(o.uuid): o
        for o in collection.iterator(return_properties=["path", "title"], include_vector=True)
    }
    for relative in PHOTOS:
        data = (photos / relative).read_bytes()
        obj = stored[content_uuid(data)]
        assert obj.properties["path"] == str(photos / relative)
        assert obj.properties["title"] == title_from_filename(relative)
    # What Weaviate holds is the service's vector of the file's own bytes.
    data = (photos / "space/rocket.webp").read_bytes()
    response = httpx.post(
        f"{service.url}/vectorize",
        json={"images": [base64.b64encode(data).decode()]},
        timeout=60,
    )
    np.testing.assert_allclose(
        stored[content_uuid(data)].vector["default"], response.json()["imageVectors"][0], atol=1e-5
    )

    code, again = _run(capsys, ["ingest", str(photos), "--collection", name,
                                *_address(weaviate_server)])  # fmt: skip
    assert code == 0, again
    assert f"0 added, {len(PHOTOS)} already stored, {len(SKIPPED)} skipped, 0 failed" in again
    assert len(collection) == len(PHOTOS)


@pytest.mark.integration
def test_a_partial_run_is_continued_by_the_next(client, photos, name):
    from integration.folder_ingest import ensure_folder_collection

    collection = ensure_folder_collection(client, name)
    # One file per window: the run stops part-way through the folder, as a killed one would.
    first = ingest_folder(collection, photos, limit=3, window_bytes=1, batch_size=2)
    assert len(first.added) == 3 and first.failed == [] and first.not_reached > 0
    assert len(collection) == 3
    second = ingest_folder(collection, photos, batch_size=2)
    assert second.failed == [] and second.not_reached == 0
    assert set(second.present) == set(first.added)
    assert set(first.added).isdisjoint(second.added)
    assert set(first.added) | set(second.added) == set(PHOTOS)
    assert _same_reasons(second.skipped)
    assert len(collection) == len(PHOTOS)


@pytest.mark.integration
def test_what_weaviate_refuses_is_listed_per_file_with_its_message(
    capsys, monkeypatch, client, weaviate_server, photos, name, tmp_path
):
    """A file the local check lets through (its limits read from CIR_* here, looser than the
    running service's) but the service refuses: Weaviate's failed object, named by file."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "coffee.jpg").write_bytes((photos / "food/coffee.jpg").read_bytes())
    (folder / "wide.png").write_bytes(_encode(Image.new("RGB", (2100, 100), "teal"), "PNG"))
    monkeypatch.setenv("CIR_MAX_ASPECT_RATIO", "1000")
    code, out = _run(capsys, ["ingest", str(folder), "--collection", name,
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 1, out
    assert "1 added, 0 already stored, 0 skipped, 1 failed" in out
    failed = out[out.index("failed:\n") :].splitlines()[1:]
    assert len(failed) == 1 and failed[0].startswith("  wide.png: ")
    assert "aspect ratio" in failed[0]
    assert len(client.collections.get(name)) == 1
    # Nothing is stored for it, so the next run sends it again (and reports it again).
    code, again = _run(capsys, ["ingest", str(folder), "--collection", name,
                                *_address(weaviate_server)])  # fmt: skip
    assert code == 1 and "0 added, 1 already stored, 0 skipped, 1 failed" in again


def _search_lines(out: str) -> list[tuple[int, float, float | None, str]]:
    """(rank, distance, rerank score or None, path) of each printed result line."""
    hits = []
    for line in out.splitlines():
        head, _, rest = line.strip().partition(". ")
        if not head.isdigit():
            continue
        words = rest.split()
        distance = float(words[words.index("distance") + 1])
        score = float(words[words.index("rerank") + 1]) if "rerank" in words else None
        hits.append((int(head), distance, score, words[-1]))
    return hits


@pytest.fixture
def ingested(client, photos, name):
    from integration.folder_ingest import ensure_folder_collection

    collection = ensure_folder_collection(client, name)
    report = ingest_folder(collection, photos)
    assert report.failed == [] and len(report.added) == len(PHOTOS)
    return collection


@pytest.mark.integration
def test_search_ranks_as_the_client_does_and_draws_a_png_sheet(
    capsys, ingested, weaviate_server, service, photos, tmp_path
):
    reference = photos / "people/astronaut.png"
    text = "the same scene in red"
    sheet = tmp_path / "sheet.png"
    code, out = _run(capsys, ["search", "--collection", ingested.name, "--image", str(reference),
                              "--text", text, "--limit", "4", "--sheet", str(sheet),
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 0, out
    assert "(in the collection, left out)" in out
    hits = _search_lines(out)
    assert [h[0] for h in hits] == [1, 2, 3, 4]

    # The same query straight from the client: the service's composed vector, nearVector.
    query = compose_query(reference.read_bytes(), text)
    vector = httpx.post(f"{service.url}/vectorize", json={"texts": [query]}, timeout=60)
    direct = ingested.query.near_vector(
        vector.json()["textVectors"][0],
        limit=4,
        filters=Filter.by_id().not_equal(content_uuid(reference.read_bytes())),
        return_properties=["path"],
        return_metadata=MetadataQuery(distance=True),
    )
    assert [h[3] for h in hits] == [o.properties["path"] for o in direct.objects]
    np.testing.assert_allclose(
        [h[1] for h in hits], [o.metadata.distance for o in direct.objects], atol=1e-4
    )
    assert str(reference) not in [h[3] for h in hits]

    # The sheet: the reference, then each result in rank order, and nothing after them.
    image = Image.open(sheet)
    layout = SheetLayout(1 + len(hits))
    assert image.format == "PNG" and image.size == layout.size
    expected = [str(reference), *(h[3] for h in hits)]
    candidates = {str(photos / r): _decoded(photos / r) for r in PHOTOS}
    for index, path in enumerate(expected):
        assert _closest_tile(image, layout, index, candidates) == path
    if layout.rows * layout.columns > len(expected):
        assert _blank(image, layout.square(len(expected)))


@pytest.mark.integration
def test_reranked_search_and_html_sheet(capsys, ingested, weaviate_server, photos, tmp_path):
    reference = photos / "food/coffee.jpg"
    text = "a cup of tea instead"
    sheet = tmp_path / "sheet.html"
    code, out = _run(capsys, ["search", "--collection", ingested.name, "--image", str(reference),
                              "--text", text, "--limit", "5", "--rerank", "--sheet", str(sheet),
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 0, out
    hits = _search_lines(out)
    assert len(hits) == 5 and all(h[2] is not None for h in hits)
    scores = [h[2] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # docs/search.md's client snippet: nearText + rerank with the same string, reference left out.
    query = compose_query(reference, text)
    direct = ingested.query.near_text(
        query=query,
        limit=5,
        filters=Filter.by_id().not_equal(content_uuid(reference.read_bytes())),
        rerank=Rerank(prop="image", query=query),
        return_properties=["path"],
        return_metadata=MetadataQuery(distance=True),
    )
    assert [h[3] for h in hits] == [o.properties["path"] for o in direct.objects]
    np.testing.assert_allclose(scores, [o.metadata.rerank_score for o in direct.objects], atol=1e-4)

    images = _html_images(sheet.read_text())
    assert [alt for alt, _ in images] == [reference.name, *(h[3] for h in hits)]
    # Each embedded picture is the file it names: the closest of all the photos.
    candidates = {str(photos / r): _decoded(photos / r) for r in PHOTOS}
    for path, (_, image) in zip([str(reference), *(h[3] for h in hits)], images, strict=True):
        assert _closest_picture(image, candidates) == path


@pytest.mark.integration
def test_search_with_a_reference_outside_the_collection_leaves_nothing_out(
    capsys, ingested, weaviate_server, tmp_path
):
    reference = tmp_path / "outside.jpg"
    reference.write_bytes(_encode(_photo("immunohistochemistry"), "JPEG"))
    code, out = _run(capsys, ["search", "--collection", ingested.name, "--image", str(reference),
                              "--text", "bluer", "--limit", "20",
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 0, out
    assert "(not in the collection)" in out
    assert len(_search_lines(out)) == len(PHOTOS)


@pytest.mark.integration
def test_ingest_with_enrich_captions_every_new_image(
    capsys, client, weaviate_server, photos, name, tmp_path
):
    from cir_module.rerank.tiny import build_tiny_reranker

    model = build_tiny_reranker(tmp_path / "tiny-chat", ["Describe this image factually"], seed=5)
    argv = ["ingest", str(photos), "--collection", name, *_address(weaviate_server), "--enrich",
            "--captioner", "transformers", "--model", str(model)]  # fmt: skip
    code, out = _run(capsys, argv)
    assert code == 0, out
    assert f"enrich: {len(PHOTOS)} captioned, 0 already captioned, 0 failed" in out
    collection = client.collections.get(name)
    objects = list(collection.iterator(return_properties=["caption", "captioner"]))
    assert len(objects) == len(PHOTOS)
    assert len({o.properties["captioner"] for o in objects}) == 1
    assert all(isinstance(o.properties["caption"], str) for o in objects)
    code, out = _run(capsys, argv)  # nothing new: nothing ingested, nothing captioned again
    assert code == 0, out
    assert f"enrich: 0 captioned, {len(PHOTOS)} already captioned, 0 failed" in out


@pytest.mark.integration
def test_enrich_needs_a_collection_with_a_caption_property(
    capsys, client, weaviate_server, photos, name
):
    from integration.folder_ingest import ensure_folder_collection

    ensure_folder_collection(client, name)
    code, out = _run(capsys, ["ingest", str(photos), "--collection", name, "--enrich",
                              "--captioner", "openai", "--model", "m",
                              "--url", "http://127.0.0.1:9/v1",
                              *_address(weaviate_server)])  # fmt: skip
    assert code == 1
    assert "without the properties caption (text)" in out
    assert len(client.collections.get(name)) == 0


@pytest.mark.integration
def test_up_serves_until_sigterm_and_keeps_its_data(tiny_checkpoint, photos, tmp_path):
    data = tmp_path / "weaviate-data"
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "cir_module.cli", "up", "--checkpoint", str(tiny_checkpoint),
               "--weaviate-port", str(http_port), "--grpc-port", str(grpc_port),
               "--data-dir", str(data)]  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    name = f"CIRUp_{uuidlib.uuid4().hex[:8]}"

    with _standing(command) as (up, printed):
        assert f"{url} (gRPC port {grpc_port})" in printed
        with connect_to_url(url, grpc_port) as client:
            assert client.is_ready()
            subset = tmp_path / "subset"
            subset.mkdir()
            for relative in ("people/astronaut.png", "food/coffee.jpg"):
                (subset / Path(relative).name).write_bytes((photos / relative).read_bytes())
            from integration.folder_ingest import ensure_folder_collection

            report = ingest_folder(ensure_folder_collection(client, name), subset)
            assert len(report.added) == 2 and report.failed == []
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0
    assert "stopped" in up.stdout.read()
    _assert_closed(http_port)

    # Started again on the same data folder: what was ingested is still there; Ctrl-C stops it.
    with _standing(command) as (up, _):
        with connect_to_url(url, grpc_port) as client:
            assert len(client.collections.get(name)) == 2
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0
    _assert_closed(http_port)

    # A part that dies by itself takes the stack down: the other is stopped, the exit code is 1.
    with _standing(command) as (up, _):
        (service,) = [pid for pid in _children(up.pid) if b" serve" in _cmdline(pid)]
        os.kill(service, signal.SIGKILL)
        assert up.wait(timeout=120) == 1
    _assert_closed(http_port)


# -- helpers -----------------------------------------------------------------------------------


class _standing:
    """``cir up`` as a child process, entered once it printed its ready line; stopped on the
    way out if a test left it running (SIGTERM, so that it stops its own children)."""

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def __enter__(self) -> tuple[subprocess.Popen, str]:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        printed = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if line.startswith("ready"):
                return self.process, "".join(printed)
        self._stop()
        raise AssertionError(f"cir up never became ready: {''.join(printed)}")

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:  # last resort: its children may outlive it
                self.process.kill()
                self.process.wait()


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux: each process's parent in /proc/N/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


def _assert_closed(port: int) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/.well-known/live", timeout=2)


def _closest_tile(
    sheet: Image.Image, layout: SheetLayout, index: int, candidates: dict[str, Image.Image]
) -> str:
    """Which of ``candidates`` (name -> picture) the picture in tile ``index`` is."""
    square = np.asarray(sheet.crop(layout.square(index)).convert("RGB"), dtype=float)

    def distance(name: str) -> float:
        picture = thumbnail(candidates[name], layout.side)
        left = (layout.side - picture.width) // 2
        top = (layout.side - picture.height) // 2
        region = square[top : top + picture.height, left : left + picture.width]
        return float(np.abs(region - np.asarray(picture, dtype=float)).mean())

    return min(candidates, key=distance)


def _closest_picture(image: Image.Image, candidates: dict[str, Image.Image]) -> str:
    """Which of ``candidates`` an HTML sheet's (JPEG) thumbnail ``image`` shows."""
    seen = np.asarray(image.convert("RGB"), dtype=float)

    def distance(name: str) -> float:
        picture = thumbnail(candidates[name], HTML_SIDE)
        if picture.size != image.size:
            return float("inf")
        return float(np.abs(seen - np.asarray(picture, dtype=float)).mean())

    return min(candidates, key=distance)


def _decoded(path: Path) -> Image.Image:
    """A file's picture as the service decodes it (alpha on white, palette to RGB)."""
    return decode_base64_image(base64.b64encode(path.read_bytes()).decode())


def _blank(sheet: Image.Image, box: tuple[int, int, int, int]) -> bool:
    region = np.asarray(sheet.crop(box).convert("RGB"))
    return bool((region == 255).all())


def _html_images(page: str) -> list[tuple[str, Image.Image]]:
    """(alt, decoded image) of each ``<img>`` of ``page``, in order."""

    class Images(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, Image.Image]] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "img":
                attributes = dict(attrs)
                head, _, payload = attributes["src"].partition(",")
                assert head == "data:image/jpeg;base64"
                image = Image.open(io.BytesIO(base64.b64decode(payload)))
                image.load()
                self.found.append((attributes["alt"], image))

    parser = Images()
    parser.feed(page)
    return parser.found
