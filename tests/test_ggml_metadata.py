"""The GGML metadata JSON rules (ggml-backend spec §3.1, cases 7–10 and 43): no llama.cpp needed."""

from __future__ import annotations

import json

import pytest

from wasinn.backends.ggml_metadata import INT_DOMAINS, KEY_KINDS, parse_metadata
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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"pooling-type": 99}',
        b'{"pooling-type": -2}',
        b'{"pooling-type": 5}',
        b'{"attention-type": 2}',
        b'{"rope-scaling-type": 4}',
        b'{"cache-type-k": 99}',
        b'{"cache-type-k": 4}',
        b'{"cache-type-v": 9}',
        b'{"cache-type-v": -1}',
        b'{"ctx-size": 4294967296}',
        b'{"ctx-size": -1}',
        b'{"batch-size": 4294967296}',
        b'{"ubatch-size": -1}',
        b'{"yarn-orig-ctx": -1}',
        b'{"threads": 2147483648}',
        b'{"threads": 513}',
        b'{"threads-batch": 100000}',
        b'{"n-gpu-layers": -2147483649}',
        b'{"n-parallel": 2147483648}',
        b'{"top-k": 2147483648}',
    ],
)
def test_integers_llama_cpp_cannot_take_are_errno_1(raw: bytes) -> None:
    """Out of the C type's range (ctypes would truncate) or not a llama.cpp enum value (it
    would abort the host)."""
    assert errno_of(raw) == Errno.INVALID_ARGUMENT


def test_integer_domain_edges_are_accepted() -> None:
    parsed = parse_metadata(
        b'{"pooling-type": 4, "attention-type": -1, "rope-scaling-type": 3, "cache-type-k": 30, '
        b'"cache-type-v": 20, "ctx-size": 4294967295, "batch-size": 4000000000, "threads": -1}'
    )
    assert parsed["pooling-type"] == 4 and parsed["ctx-size"] == 4294967295
    for kv_type in (0, 1, 2, 3, 6, 7, 8, 20, 30):
        assert parse_metadata(json.dumps({"cache-type-k": kv_type}).encode()) == {"cache-type-k": kv_type}


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
        value = special.get(key, next(iter(INT_DOMAINS[key])) if key in INT_DOMAINS else samples[kind])
        assert key in parse_metadata(json.dumps({key: value}).encode()), key
