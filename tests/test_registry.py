"""One registry of methods and link modes, and the VideoDetector interface every method implements."""

from __future__ import annotations

import pytest

from vidtag.types import LINK_METHODS, METHODS, VideoDetector


def test_cli_api_and_builders_read_one_registry():
    from vidtag import api, cli, linking
    from vidtag.models import build

    assert cli.METHOD_CHOICES is METHODS and build.METHODS is METHODS
    assert cli.LINK_CHOICES is LINK_METHODS and api.LINK_METHODS is LINK_METHODS and linking.METHODS is LINK_METHODS
    method_option = next(p for p in cli.detect.params if p.name == "method")
    link_option = next(p for p in cli.detect.params if p.name == "link")
    assert tuple(method_option.type.choices) == METHODS and tuple(link_option.type.choices) == LINK_METHODS


@pytest.mark.parametrize("method", METHODS)
def test_every_method_builds_a_video_detector(method):
    from vidtag.models.build import DetectorSettings, build_detector

    detector, _ = build_detector(DetectorSettings(method, device="cpu", runtime="torch"))
    assert isinstance(detector, VideoDetector) and detector.method == method
    assert detector.shot_starts == [] and len(detector.classes) == 80


def test_an_object_without_run_is_not_a_video_detector():
    class Half:
        method, classes, options, shot_starts = "frame", ("x",), None, []

    assert not isinstance(Half(), VideoDetector)
