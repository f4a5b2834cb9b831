"""The transcript formats of /v1/audio (wasinn.serve.openai_audio), from the backend's lines."""

from __future__ import annotations

import re

from wasinn.serve.openai_audio import Segment, parse_transcript, srt, vtt

LINES = "[00:00:00.000 --> 00:00:01.500]  Hello there.\n[00:00:01.500 --> 01:02:03.040]  Again, you.\n"


def test_the_backend_lines_become_segments_with_their_leading_space() -> None:
    assert parse_transcript(LINES) == [
        Segment(0.0, 1.5, " Hello there."),
        Segment(1.5, 3723.04, " Again, you."),
    ]


def test_srt_and_vtt_cues() -> None:
    segments = parse_transcript(LINES)
    assert srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 01:02:03,040\nAgain, you.\n\n"
    )
    assert vtt(segments) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "00:00:01.500 --> 01:02:03.040\nAgain, you.\n\n"
    )
    assert re.fullmatch(r"WEBVTT\n\n", vtt([]))
