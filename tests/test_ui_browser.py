"""``cir ui``, the search page, in a real browser: Debian's Chromium in headless mode, driven by
selenium through chromium-driver, against the page served by ``cir ui`` (a child process)
in front of the real Weaviate and the real service. A folder of real photos (``skimage.data``)
is ingested first, with ``cir ingest``'s code.

What the browser sees is compared with what the Weaviate Python client returns for the same
query: the thumbnails must come in Weaviate's order.

``make test`` installs Chromium (``make browser``) and sets ``CIR_REQUIRE_BROWSER=1``: there, a
missing browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import html
import os
import re
import sys
import uuid as uuidlib
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skimage_data

from integration.browser import browser_paths, headless_chromium, save_screenshot
from integration.folder_ingest import content_uuid, ensure_folder_collection, ingest_folder
from integration.processes import ManagedProcess, free_port
from integration.search import composed_search

pytestmark = pytest.mark.integration

# Small enough that the test can send a file beyond it, large enough for the photos.
MAX_IMAGE_BYTES = 1_000_000
PHOTOS = {"astronaut.png": "astronaut", "coffee.jpg": "coffee", "cat.jpg": "chelsea",
          "rocket.png": "rocket", "camera.png": "camera", "coins.png": "coins"}  # fmt: skip
# Where the test's screenshots are kept for a person to look at after `make test` (ignored by git).
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".cache" / "artifacts" / "ui"
# A reference that is not in the collection.
OUTSIDER = "hubble_deep_field"


class _UIProcess(ManagedProcess):
    """``cir ui`` on a free port of 127.0.0.1, ready once ``/healthz`` answers."""

    def __init__(self, weaviate_server, collection: str, *extra: str) -> None:
        super().__init__()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "cir_module.cli", "ui", "--collection", collection,
                        "--port", str(self.port), "--weaviate", weaviate_server.url,
                        "--grpc-port", str(weaviate_server.grpc_port), "--limit", "4",
                        *extra]  # fmt: skip
        self.log_path = Path(f"/tmp/cir-ui-{self.port}.log")

    def start(self) -> _UIProcess:
        env = {**os.environ, "CIR_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES)}
        self._spawn(self.command, env)
        self._wait_ready(f"{self.url}/healthz", "cir ui", 120)
        return self


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-photos")
    for name, picture in PHOTOS.items():
        image = Image.fromarray(getattr(skimage_data, picture)())
        image.save(root / name, format="PNG" if name.endswith(".png") else "JPEG")
    Image.fromarray(getattr(skimage_data, OUTSIDER)()).save(root.parent / "outsider.jpg")
    return root


@pytest.fixture(scope="module")
def page(weaviate_server, photo_folder):
    """The collection of photos and ``cir ui`` serving it; both removed afterwards."""
    from integration.stack import connect

    name = f"CIRUi_{uuidlib.uuid4().hex[:8]}"
    with connect(weaviate_server) as client:
        try:
            report = ingest_folder(ensure_folder_collection(client, name), photo_folder)
            assert len(report.added) == len(PHOTOS) and not report.failed
            with _UIProcess(weaviate_server, name) as ui:
                yield ui, client.collections.get(name)
        finally:
            client.collections.delete(name)


@pytest.fixture(scope="module")
def browser():
    if browser_paths() is None:
        if os.environ.get("CIR_REQUIRE_BROWSER"):
            pytest.fail("chromium / chromedriver missing: run `make browser`")
        pytest.skip("no chromium / chromedriver (make browser installs them)")
    driver = headless_chromium()
    driver.implicitly_wait(30)  # elements of a page being rendered after a query
    try:
        yield driver
    finally:
        driver.quit()


def _shown(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    figures = driver.find_elements(By.CSS_SELECTOR, "#results figure.result")
    ranks = [int(f.get_attribute("data-rank")) for f in figures]
    assert ranks == list(range(1, len(figures) + 1))
    return [f.get_attribute("data-uuid") for f in figures]


def _submit(driver, text: str, *, upload: Path | None = None, rerank: bool = False) -> None:
    from selenium.webdriver.common.by import By

    if upload is not None:
        driver.find_element(By.ID, "upload").send_keys(str(upload))
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    checkbox = driver.find_element(By.ID, "rerank")
    if checkbox.is_selected() != rerank:
        checkbox.click()
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "search").click()
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def replaced(_) -> bool:
        # The old page is gone once its root cannot be asked anything. Chrome says so with a
        # stale-element error or, caught mid-navigation, "Node with given id does not belong
        # to the document" (a plain WebDriverException, which staleness_of does not catch).
        try:
            old.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one too
            return True
        return False

    WebDriverWait(driver, 60).until(replaced)


def test_upload_type_submit_then_click_a_result(page, browser, photo_folder):
    from selenium.webdriver.common.by import By

    ui, collection = page
    browser.get(ui.url + "/")
    assert "no reference yet" in browser.find_element(By.ID, "reference").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#browse a.pick")) == len(PHOTOS)

    # Upload a photo that is in the collection: it is left out of its own results.
    reference = photo_folder / "astronaut.png"
    _submit(browser, "but in the kitchen", upload=reference)
    expected = composed_search(collection, reference, "but in the kitchen", limit=4)
    assert expected.excluded == content_uuid(reference.read_bytes())
    shown = _shown(browser)
    assert shown == [hit.uuid for hit in expected.hits] and len(shown) == 4
    assert expected.excluded not in shown
    assert browser.find_element(By.ID, "reference").get_attribute("data-ref").startswith("upload:")
    first = save_screenshot(browser, SCREENSHOTS / "upload.png")
    assert Image.open(first).size[0] >= 1000

    # Click the second result: it becomes the reference; a new modification ranks without it.
    chosen = shown[1]
    browser.find_elements(By.CSS_SELECTOR, "#results figure.result a")[1].click()
    assert browser.find_element(By.ID, "reference").get_attribute("data-ref") == chosen
    _submit(browser, "the same, brighter", rerank=True)
    stored = collection.query.fetch_object_by_id(chosen, return_properties=["path"])
    path = Path(stored.properties["path"])
    again = composed_search(collection, path, "the same, brighter", limit=4, rerank=True)
    assert again.excluded == chosen
    shown = _shown(browser)
    assert shown == [hit.uuid for hit in again.hits] and chosen not in shown
    captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#results figcaption")]
    assert all("rerank" in c and "distance" in c for c in captions)
    # Scores as Weaviate gave them, in the order it gave them.
    for hit, caption in zip(again.hits, captions, strict=True):
        assert f"rerank {hit.rerank_score:.4f}" in caption
    save_screenshot(browser, SCREENSHOTS / "reranked.png")


def test_pick_from_the_collection_and_an_outside_reference(page, browser, photo_folder):
    from selenium.webdriver.common.by import By

    ui, collection = page
    browser.get(ui.url + "/")
    pick = browser.find_elements(By.CSS_SELECTOR, "#browse a.pick")[2]
    chosen = pick.get_attribute("data-uuid")
    pick.click()
    assert browser.find_element(By.ID, "reference").get_attribute("data-ref") == chosen
    _submit(browser, "in black and white")
    stored = collection.query.fetch_object_by_id(chosen, return_properties=["path"])
    path = Path(stored.properties["path"])
    expected = composed_search(collection, path, "in black and white", limit=4)
    shown = _shown(browser)
    assert shown == [hit.uuid for hit in expected.hits] and chosen not in shown

    # A photo the collection does not hold: nothing is left out, all photos can come back.
    outsider = photo_folder.parent / "outsider.jpg"
    _submit(browser, "with more stars", upload=outsider)
    expected = composed_search(collection, outsider, "with more stars", limit=4)
    assert expected.excluded is None
    assert _shown(browser) == [hit.uuid for hit in expected.hits]


def test_mistakes_are_said_on_the_page_and_the_page_stays_up(page, browser, photo_folder):
    from selenium.webdriver.common.by import By

    ui, _ = page
    browser.get(ui.url + "/")
    _submit(browser, "but red")  # no reference chosen
    assert "choose a reference" in browser.find_element(By.ID, "error").text
    _submit(browser, "   ", upload=photo_folder / "coffee.jpg")  # no modification
    assert "type the modification" in browser.find_element(By.ID, "error").text
    assert browser.find_elements(By.CSS_SELECTOR, "#results") == []
    assert httpx.get(f"{ui.url}/healthz").json()["status"] == "ok"


def test_bad_requests_get_4xx_with_the_reason(page, photo_folder):
    ui, collection = page
    post = f"{ui.url}/search"
    text = {"text": "but red"}

    def upload(name: str, data: bytes) -> httpx.Response:
        return httpx.post(post, data=text, files={"upload": (name, data)}, timeout=60)

    cases = [
        (upload("notes.png", b"not a picture at all" * 10), 400, "not an image"),
        (upload("empty.png", b""), 400, "the file is empty"),
        # No file chosen: browsers send a part without a file name, which is no upload.
        (upload("", b""), 400, "choose a reference"),
        (upload("big.jpg", b"\xff" * (MAX_IMAGE_BYTES + 10)), 413, "larger than the service"),
        (httpx.get(f"{ui.url}/", params={"ref": str(uuidlib.uuid4()), "text": "x"}), 404,
         "no object"),
        (httpx.get(f"{ui.url}/", params={"ref": "not-a-uuid", "text": "x"}), 400, "a UUID"),
        (httpx.get(f"{ui.url}/", params={"ref": "upload:gone", "text": "x"}), 404, "upload it"),
        (httpx.get(f"{ui.url}/", params={"limit": "many"}), 422, "limit"),
    ]  # fmt: skip
    for response, status, words in cases:
        assert response.status_code == status, (words, response.text[:300])
        body = response.json()["error"] if status == 422 else response.text
        assert words in body
    # Beyond the declared length the body is not read at all: JSON, like the service's errors.
    huge = upload("huge.jpg", b"\0" * (MAX_IMAGE_BYTES + 200_000))
    assert huge.status_code == 413 and "an upload may have" in huge.json()["error"]
    # A limit beyond the page's maximum.
    uuid = str(collection.query.fetch_objects(limit=1).objects[0].uuid)
    response = httpx.get(f"{ui.url}/", params={"ref": uuid, "text": "x", "limit": 500})
    assert response.status_code == 400 and "between 1 and 50" in response.text
    assert httpx.get(f"{ui.url}/healthz").status_code == 200


def test_demo_ui_serves_the_sample_gallery_with_its_examples(tiny_checkpoint, tmp_path):
    # `make ui` is `cir demo --ui`: here with the tiny random model (no second stage behind
    # it) and a small gallery of the default tier, the hard one.
    import signal
    import subprocess
    import time

    from integration.demo import sample_gallery

    port = free_port()
    gallery = tmp_path / "gallery"
    command = [sys.executable, "-m", "cir_module.cli", "demo", "--ui", "--checkpoint",
               str(tiny_checkpoint), "--gallery-size", "30", "--queries", "2", "--port",
               str(port), "--gallery-dir", str(gallery)]  # fmt: skip
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        home = httpx.get(f"{url}/", timeout=60)
        assert home.status_code == 200 and "30 images" in home.text
        assert len(list(gallery.glob("*.png"))) == 30
        _, queries = sample_gallery(30, 2, 0, "hard")
        links = re.findall(r'class="example" href="([^"]+)"', home.text)
        assert len(links) == 2
        answer = httpx.get(url + html.unescape(links[0]), timeout=60)
        assert answer.status_code == 200
        assert f"Results for “{queries[0].text}”" in answer.text
        assert len(re.findall(r'<figure class="result', answer.text)) == 10
    finally:
        demo.send_signal(signal.SIGTERM)
        out = demo.communicate(timeout=120)[0]
    assert demo.returncode == 0, out[-2000:]
    # The page, Weaviate and the service are all gone (stopped, not orphaned).
    weaviate_url, service_url = re.search(r"Weaviate at (\S+), service at (\S+)", out).groups()
    for gone in (f"{url}/healthz", f"{weaviate_url}/v1/.well-known/live", f"{service_url}/meta"):
        with pytest.raises(httpx.TransportError):
            httpx.get(gone, timeout=2)


@pytest.mark.integration
def test_a_reranked_query_shows_first_stage_ranks_and_each_rationale(
    tiny_checkpoint, tmp_path, browser
):
    """With a change verifier served and captions stored, the page reranks on the captions:
    each result shows its rank in the first stage alone (together a permutation of the first
    stage's top 4), and on demand the rationale, the reference's stored caption and the
    change list the verifier read."""
    import json

    from selenium.webdriver.common.by import By

    from cir_module.rerank.tiny import build_tiny_reranker
    from cir_module.vlm.changes import description_changes
    from cir_module.vlm.folder import VLM_SETTINGS
    from integration.ingest import ingest_objects, object_uuid
    from integration.schema import create_image_collection
    from integration.service_process import ServiceProcess
    from integration.stack import connect
    from integration.weaviate_server import WeaviateServer
    from tests.conftest import png_b64, scene_images

    folder = build_tiny_reranker(tmp_path / "verifier", ["make the circle red"], seed=0)
    settings = {"image_side": 112, "verify": "changes", "differ": "fact-diff"}
    (folder / VLM_SETTINGS).write_text(json.dumps(settings))
    images = scene_images(6, seed=4)
    # Distinct captions, as an enrichment job would store them (the tiny model's own would
    # all read alike): one fact changed per image.
    captions = [f"a small red circle; a square number {i}" for i in range(6)]
    name = f"CIRUiRationale_{uuidlib.uuid4().hex[:8]}"
    env = {"CIR_RERANKER_MODEL": str(folder), "CIR_RERANKER_LAMBDA": "1"}
    with (
        ServiceProcess(tiny_checkpoint, env=env) as service,
        WeaviateServer(service.url) as server,
        connect(server) as client,
    ):
        try:
            collection = create_image_collection(
                client, name, text_properties=("path", "title", "caption")
            )
            rows = [
                (f"s{i}", {"image": png_b64(im), "title": f"scene {i}", "caption": c})
                for i, (im, c) in enumerate(zip(images, captions, strict=True))
            ]
            assert not ingest_objects(collection, rows).failed
            text = "make the square number 3"
            with _UIProcess(server, name, "--caption-property", "caption") as ui:
                browser.get(f"{ui.url}/?ref={object_uuid('s0')}&text={text}&rerank=true")
                figures = browser.find_elements(By.CSS_SELECTOR, "#results figure.result")
                firsts = [int(f.get_attribute("data-first-rank")) for f in figures]
                assert len(figures) == 4 and sorted(firsts) == [1, 2, 3, 4]
                shown = [f.find_element(By.CSS_SELECTOR, ".first-rank").text for f in figures]
                assert shown == [f"(first stage #{n})" for n in firsts]
                for figure in figures:
                    figure.find_element(By.CSS_SELECTOR, ".rationale summary").click()
                    title = figure.find_element(By.TAG_NAME, "img").get_attribute("alt")
                    own = captions[int(title.split()[-1])]
                    said = figure.find_element(By.CSS_SELECTOR, ".rationale .changes").text
                    assert said == (
                        f"the changes to this result: “{description_changes(captions[0], own)}”"
                    )
                    assert captions[0] in figure.find_element(By.CSS_SELECTOR, ".rationale").text
                save_screenshot(browser, tmp_path / "rationale.png")
        finally:
            client.collections.delete(name)
