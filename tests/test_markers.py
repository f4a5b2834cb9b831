"""tests/markers.py: a test is marked for what it reaches, through helpers and fixtures."""

from __future__ import annotations

from pathlib import Path

import markers

MODULE = """
import pytest
from conftest import shared_file

def birds():
    return shared_file("birds-v1", "bird.jpg")

def helper():
    return birds()

@pytest.fixture
def picture():
    return helper()

@pytest.fixture(params=["made", pytest.param("shared", marks=pytest.mark.shared_data)])
def kit(request):
    return birds() if request.param == "shared" else b""

def test_direct():
    shared_file("x")

def test_through_helpers():
    helper()

def test_through_a_fixture(picture):
    pass

def test_through_a_parametrized_fixture(kit):
    pass

def test_openvino_inside():
    import openvino  # noqa: F401

def test_nothing():
    pass
"""


def test_reaches_follows_helpers_and_fixtures(tmp_path: Path) -> None:
    path = tmp_path / "test_sample.py"
    path.write_text(MODULE)
    shared = {name for name in markers._module(path)[0] if markers._reaches(path, name, "shared_data")}
    assert shared >= {"test_direct", "test_through_helpers", "test_through_a_fixture", "picture", "helper"}
    assert "test_nothing" not in shared and "kit" not in shared  # a param carries its own mark
    assert markers._reaches(path, "test_openvino_inside", "openvino")
    assert not markers._reaches(path, "test_direct", "openvino")
