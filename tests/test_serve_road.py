"""``wasinn serve --demo`` on the real road-segmentation model: answers, the page, and load."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, guest_wasm, missing, native_infer, require_module, shared_file

require_module("starlette")
require_module("uvicorn")
require_module("httpx")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402
from wasinn.bench.loadtest import hammer  # noqa: E402
from wasinn.tools import im2tensor  # noqa: E402
from wasinn.tools.visualize import class_shares, segmentation_labels  # noqa: E402

pytestmark = [pytest.mark.usefixtures("openvino_available"), pytest.mark.shared_data]

MODEL = "road-segmentation-adas-0001"
QUERY = "name=road-segmentation&dims=1x512x896x3"


@pytest.fixture(scope="module")
def road_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    shared_file(MODEL, f"{MODEL}.xml")
    guest_wasm("nn-pipe")
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "WASINN_MODELS": str(shared_file()), "WASINN_CACHE_DIR": str(cache)}
    process, base = start_server("--demo", "--workers", "2", env=env)
    yield base
    stop_server(process)


@pytest.fixture(scope="module")
def photo() -> Path:
    return shared_file(MODEL, "empty_road_mapillary.jpg")


def test_the_route_answers_what_native_openvino_computes(road_server: str) -> None:
    image = np.random.default_rng(5).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    response = httpx.post(f"{road_server}/road-segmentation?{QUERY}", content=image.tobytes(), timeout=120)
    assert response.status_code == 200, response.text
    got = np.frombuffer(response.content, np.float32).reshape(1, 4, 512, 896)
    (expected,) = native_infer(shared_file(MODEL, f"{MODEL}.xml"), [image.transpose(0, 3, 1, 2)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_label_map_route_is_native_argmax(road_server: str) -> None:
    image = np.random.default_rng(6).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    url = f"{road_server}/road-segmentation?{QUERY}&argmax=4"
    response = httpx.post(url, content=image.tobytes(), timeout=120)
    assert response.status_code == 200, response.text
    labels = np.frombuffer(response.content, np.uint8).reshape(512, 896)
    (expected,) = native_infer(shared_file(MODEL, f"{MODEL}.xml"), [image.transpose(0, 3, 1, 2)])
    assert (labels == expected[0].argmax(axis=0)).mean() >= 0.9999


def test_malformed_bodies_are_4xx_in_one_line(road_server: str) -> None:
    url = f"{road_server}/road-segmentation"
    short = httpx.post(f"{url}?{QUERY}", content=b"\x00" * 1000, timeout=60)
    assert short.status_code == 400
    assert short.json() == {
        "error": "nn-pipe: stdin holds 1000 bytes; a 1x512x896x3 f32 tensor needs 5505024",
        "exit_code": 65,
    }
    assert httpx.post(f"{url}?name=road-segmentation", content=b"", timeout=60).status_code == 400
    assert httpx.post(f"{road_server}/demo/segment", content=b"GIF89a...", timeout=60).status_code == 400
    assert httpx.post(f"{road_server}/demo/segment", content=b"", timeout=60).status_code == 400


def test_the_demo_segments_a_photo_as_native_inference_does(road_server: str, photo: Path) -> None:
    response = httpx.post(f"{road_server}/demo/segment", content=photo.read_bytes(), timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    tensor = im2tensor(photo, "512x896x3xfp32")[np.newaxis]
    (scores,) = native_infer(shared_file(MODEL, f"{MODEL}.xml"), [tensor.transpose(0, 3, 1, 2)])
    expected = class_shares(segmentation_labels(scores))
    assert result["shares"] == pytest.approx({k: round(v, 2) for k, v in expected.items()}, abs=0.02)
    assert result["shares"]["road"] > 10
    picture = Image.open(io.BytesIO(base64.b64decode(result["picture"].split(",", 1)[1])))
    assert picture.size == (896, 512)


@pytest.mark.slow  # 20-46 s on the 2-core machine
def test_load_on_loopback_no_errors_and_stable_memory(road_server: str) -> None:
    """The CI-sized load test; `make loadtest` is the full 2,000-request run (docs/serving.md)."""
    total = int(os.environ.get("WASINN_LOAD_REQUESTS", "48"))
    image = np.random.default_rng(9).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32).tobytes()
    url = f"{road_server}/road-segmentation?{QUERY}"
    # A first round brings every buffer and thread to its working size; after it the server's
    # RSS is flat (each request's wasm memory is unmapped as it ends): a leak of even a tenth
    # of the 5.5 MB body per request would pass the bound below over 48 requests.
    warm_up = asyncio.run(hammer(url, image, total=32, concurrency=16, deadline=600))
    report = asyncio.run(hammer(url, image, total=total, concurrency=16, deadline=600))
    print(warm_up.summary(), report.summary(), sep="\n")
    assert report.complete and report.requests == total
    assert warm_up.unexpected == report.unexpected == 0, report.failures
    assert 0 < report.p50_ms <= report.p99_ms
    assert f"p50 {report.p50_ms:.0f} ms, p99 {report.p99_ms:.0f} ms" in report.summary()
    bound = 64 * 2**20
    assert report.rss_at_end <= warm_up.rss_at_end + bound, (warm_up.rss_at_end, report.rss_at_end)
    assert max(report.rss_samples) <= max(warm_up.rss_samples) + bound
    malformed = asyncio.run(
        hammer(
            f"{road_server}/road-segmentation?{QUERY}", b"\x01" * 999, total=32, concurrency=16, expect=400
        )
    )
    assert malformed.complete and malformed.unexpected == 0, malformed.failures
    metrics = httpx.get(f"{road_server}/metrics").text
    assert "wasinn_requests_in_flight 0" in metrics


def test_the_page_in_headless_chromium(road_server: str, photo: Path, tmp_path: Path) -> None:
    require_module("selenium")
    if not (Path("/usr/bin/chromium").is_file() and Path("/usr/bin/chromedriver").is_file()):
        missing("chromium and chromium-driver are not installed (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{road_server}/")
        assert driver.title == "wasinn road segmentation"
        driver.find_element(By.ID, "photo").send_keys(str(photo))
        driver.find_element(By.ID, "segment").click()
        WebDriverWait(driver, 120).until(
            lambda d: d.find_element(By.ID, "status").get_attribute("data-done") == "1"
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "#shares tbody tr")
        shares = {row.get_attribute("data-cls"): row.find_elements(By.TAG_NAME, "td")[1].text for row in rows}
        assert list(shares) == ["BG", "road", "curb", "mark"]
        road = float(shares["road"].removesuffix(" %"))
        assert 10 < road < 60
        picture = driver.find_element(By.ID, "picture")
        assert driver.execute_script("return arguments[0].naturalWidth", picture) == 896
        screenshot = tmp_path / "serving.png"
        driver.save_screenshot(str(screenshot))
        if os.environ.get("WASINN_UPDATE_SCREENSHOT") and not IN_CI:
            # a JPEG: the PNG screenshot of the photo page is 650 KB, too big for the repository
            target = Path(__file__).resolve().parents[1] / "docs" / "serving.jpg"
            Image.open(screenshot).convert("RGB").save(target, quality=85, optimize=True)
    finally:
        driver.quit()
