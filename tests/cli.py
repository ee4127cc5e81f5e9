"""Running `vidtag` commands in-process for the CLI tests."""

from __future__ import annotations

from click.testing import CliRunner

from vidtag.cli import main


def invoke(*args):
    """Run ``vidtag ARGS`` (paths and numbers as strings); fails the test on a traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output + (result.stderr or ""), result.output + result.stderr
    return result
