"""The GGML metadata JSON rules (ggml-backend spec §3.1, cases 7–10 and 43): no llama.cpp needed."""

from __future__ import annotations

import json

import pytest

from wasinn.backends.ggml_metadata import KEY_KINDS, parse_metadata
from wasinn.core import Errno, NNError


def errno_of(raw: bytes) -> int:
    try:
        parse_metadata(raw)
    except NNError as err:
        return int(err.errno)
    return 0


@pytest.mark.parametrize("raw", [b"{bad", b"", b"\xff", b'{"temp": NaN}', b'{"temp": Infinity}', b"{} x"])
def test_not_json_is_errno_2(raw: bytes) -> None:
    assert errno_of(raw) == Errno.INVALID_ENCODING


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ctx-size": "1024"}',
        b'{"ctx-size": 1024.0}',
        b'{"ctx-size": true}',
        b'{"ctx-size": 99999999999999999999}',
        b'{"temp": "0.1"}',
        b'{"temp": false}',
        b'{"stream-stdout": 1}',
        b'{"reverse-prompt": 3}',
        b'{"split-mode": "diagonal"}',
        b'{"flash-attn": "maybe"}',
        b'{"json-schema": {}}',
        b'{"seed": "1"}',
        b'{"n-cpu-moe": -1}',
        b'{"hellaswag-tasks": -1}',
        b'{"cvector-dimre-method": "pca"}',
        b'{"n-keep": 1.5}',
        b'{"tensor-split": "3,x"}',
    ],
)
def test_wrong_type_is_errno_1(raw: bytes) -> None:
    assert errno_of(raw) == Errno.INVALID_ARGUMENT


def test_non_object_is_a_no_op() -> None:
    for raw in (b"[]", b"42", b"null", b'"text"'):
        assert parse_metadata(raw) == {}


def test_unknown_keys_are_ignored_and_the_first_duplicate_wins() -> None:
    parsed = parse_metadata(b'{"llama3": true, "n-predict": 5, "n-predict": "x", "temp": 0}')
    assert parsed == {"n-predict": 5, "temp": 0.0}


def test_values_are_normalised() -> None:
    parsed = parse_metadata(
        b'{"seed": -1, "temp": -2, "top-p": 0.5, "flash-attn": "on", "tensor-split": "3,2"}'
    )
    assert parsed == {
        "seed": 0xFFFFFFFF,
        "temp": 0.0,
        "top-p": 0.5,
        "flash-attn": "on",
        "tensor-split": [3.0, 2.0],
    }


def test_every_kind_accepts_its_type() -> None:
    samples = {"bool": True, "int": -3, "unsigned": 3, "float": 1, "string": "on"}
    special = {
        "split-mode": "row",
        "tensor-split": "3,2",
        "cvector-dimre-method": "DIMRE_METHOD_PCA",
        "json-schema": "{}",
        "n-cpu-moe": 3,
    }
    for key, kind in KEY_KINDS.items():
        value = special.get(key, samples[kind])
        assert key in parse_metadata(json.dumps({key: value}).encode()), key
