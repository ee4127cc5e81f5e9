"""Parallel batches: local worker processes (--workers) and a Ray cluster (--ray).

Both must give byte-identical outputs and the same manifest records (timing
fields aside) as a sequential run, retry or report every failure, and never
import Ray unless asked.  The Ray tests start a local 2-CPU cluster on this
machine and are skipped when Ray is not installed (``pip install -e
'.[ray]'``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.clips import make_clip
from tests.outputs import check_record, manifest_records, stray_files
from tests.stub_detectors import POISON_WIDTH, faulty_runner
from tests.stub_detectors import fake_runner as fake_runner_factory
from vidtag.api import annotate
from vidtag.batch import MANIFEST_NAME
from vidtag.cli import main

REPO = Path(__file__).resolve().parents[1]
ALL_FORMATS = ("coco", "mot", "mot-json", "csv", "mp4")
TIMING_FIELDS = ("seconds", "fps", "detect_fps", "finished")


def comparable(out: Path) -> list[dict]:
    """The manifest's records in file order, without the fields that time the run."""
    videos = json.loads((out / MANIFEST_NAME).read_text())["videos"]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in videos]


def assert_same_run(local: Path, other: Path) -> None:
    """Same files with the same bytes, and the same manifest records."""
    def files(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)

    names = files(local)
    assert names and names == files(other)
    for name in names:
        assert (local / name).read_bytes() == (other / name).read_bytes(), name
    assert comparable(local) == comparable(other)
    assert stray_files(other) == []


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for i, frames in enumerate((14, 9, 20)):
        make_clip(folder / f"v{i}.mp4", n_frames=frames, width=96, height=64, fps=10)
    return folder


def poison_folder(tmp_path: Path, videos: Path) -> Path:
    """The module's videos plus ``poison.mp4``, which the faulty detector fails on."""
    folder = tmp_path / "videos"
    shutil.copytree(videos, folder)
    make_clip(folder / "poison.mp4", n_frames=6, width=POISON_WIDTH, height=64, fps=10)
    return folder


# --------------------------------------------------------------------------- no Ray needed


def test_import_vidtag_never_imports_ray():
    code = ("import sys, vidtag, vidtag.api, vidtag.batch, vidtag.cli, vidtag.parallel, vidtag.cluster\n"
            "assert 'ray' not in sys.modules, 'ray imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_ray_not_installed_is_one_clear_line(tmp_path, clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = CliRunner().invoke(main, ["detect", str(clip), "-o", str(tmp_path / "out"), "--ray"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--ray needs Ray" in lines[0] and "pip install 'vidtag[ray]'" in lines[0], result.stderr


def test_ray_before_the_videos_is_a_usage_error(tmp_path, clip):
    result = CliRunner().invoke(main, ["detect", "--ray", str(clip), str(clip)])
    assert result.exit_code == 2 and "put --ray after the videos" in result.stderr, result.stderr
    result = CliRunner().invoke(main, ["detect", str(clip), "--ray", "--workers", "2"])
    assert result.exit_code == 2 and "do not go together" in result.stderr


def test_workers_give_the_same_outputs_and_manifest(tmp_path, videos, fake_runner):
    local, parallel = tmp_path / "local", tmp_path / "parallel"
    assert annotate([videos], local, ALL_FORMATS, runner=fake_runner).ok
    summary = annotate([videos], parallel, ALL_FORMATS, runner=fake_runner, workers=2, make_runner=fake_runner_factory)
    assert summary.ok and [r["stem"] for r in summary.records] == ["v0", "v1", "v2"]
    assert_same_run(local, parallel)
    rerun = annotate([videos], parallel, ALL_FORMATS, runner=fake_runner, workers=2, make_runner=fake_runner_factory)
    assert [r["status"] for r in rerun.records] == ["skipped"] * 3


def test_workers_record_a_failing_video_and_finish_the_others(tmp_path, videos, fake_runner):
    folder = poison_folder(tmp_path, videos)
    attempts = tmp_path / "attempts"
    make = functools.partial(faulty_runner, mode="raise", attempts=str(attempts))
    summary = annotate([folder], tmp_path / "out", ("coco", "csv"), runner=fake_runner, workers=2, make_runner=make)
    records = {r["stem"]: r for r in summary.records}
    assert records["poison"]["status"] == "failed"
    assert records["poison"]["error"] == f"{folder / 'poison.mp4'}: RuntimeError: poison clip"  # as a sequential run says
    assert all(records[s]["status"] == "done" for s in ("v0", "v1", "v2"))
    assert manifest_records(tmp_path / "out")["poison"]["status"] == "failed"


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster for this module (workers can import ``tests``)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
        yield ray
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def test_ray_gives_the_same_outputs_and_manifest(tmp_path, videos, fake_runner, ray_cluster):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert annotate([videos], local, ALL_FORMATS, runner=fake_runner).ok
    events = []
    summary = annotate([videos], on_ray, ALL_FORMATS, runner=fake_runner, ray="", make_runner=fake_runner_factory,
                       on_event=lambda kind, task, record: events.append((kind, task.stem)))
    assert summary.ok and [r["stem"] for r in summary.records] == ["v0", "v1", "v2"]
    assert_same_run(local, on_ray)
    assert sorted(events) == sorted([("start", s) for s in ("v0", "v1", "v2")] + [("end", s) for s in ("v0", "v1", "v2")])
    rerun = annotate([videos], on_ray, ALL_FORMATS, runner=fake_runner, ray="", make_runner=fake_runner_factory)
    assert [r["status"] for r in rerun.records] == ["skipped"] * 3


@pytest.mark.parametrize("mode, status, tries", [("raise", "failed", 3), ("die", "failed", 3), ("die-once", "done", 2)])
def test_ray_retries_a_failed_task_then_reports_it(tmp_path, videos, fake_runner, ray_cluster, mode, status, tries):
    folder = poison_folder(tmp_path, videos)
    attempts = tmp_path / "attempts"
    make = functools.partial(faulty_runner, mode=mode, attempts=str(attempts))
    out = tmp_path / "out"
    summary = annotate([folder], out, ("coco", "csv"), runner=fake_runner, ray="", make_runner=make)
    records = {r["stem"]: r for r in summary.records}
    assert sorted(records) == ["poison", "v0", "v1", "v2"]  # every video comes back
    assert len(attempts.read_text().splitlines()) == tries  # 1 try + Ray's retries (2)
    poison = records["poison"]
    assert poison["status"] == status, poison
    if mode == "raise":
        assert poison["error"] == f"{folder / 'poison.mp4'}: RuntimeError: poison clip (failed 3 times on the Ray cluster)"
    elif mode == "die":
        assert poison["error"].startswith(f"{folder / 'poison.mp4'}: the Ray task failed 3 times (")
        assert "\n" not in poison["error"]
    on_disk = manifest_records(out)
    assert on_disk["poison"]["status"] == status
    for stem in ("v0", "v1", "v2") + (("poison",) if status == "done" else ()):
        check_record(out, on_disk[stem])
    assert stray_files(out) == []


def test_cli_on_a_local_ray_cluster_matches_a_local_run(tmp_path, videos):
    """`vidtag detect DIR --ray local` end to end (real NanoDet-g, its own cluster)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    args = [sys.executable, "-m", "vidtag.cli", "detect", str(videos), "--imgsz", "64"]
    local = subprocess.run([*args, "-o", str(tmp_path / "local"), "--quiet"], capture_output=True, text=True,
                           timeout=180, cwd=REPO)
    assert local.returncode == 0, local.stderr
    on_ray = subprocess.run([*args, "-o", str(tmp_path / "ray"), "--ray", "local"], capture_output=True, text=True,
                            timeout=240, cwd=REPO)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "Traceback" not in on_ray.stderr
    assert "Ray cluster local: 1 node(s)" in on_ray.stderr
    assert [f"[{i}/3]" in on_ray.stderr for i in (1, 2, 3)] == [True] * 3  # the cluster's progress
    assert "3 done, 0 skipped, 0 failed" in on_ray.stderr
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    for record in manifest_records(tmp_path / "ray").values():
        check_record(tmp_path / "ray", record)


def test_workers_start_before_the_settings_are_checked_and_stop_when_they_fail(tmp_path, videos):
    """--workers starts its processes early; settings the driver refuses stop them again: one error, no process left."""
    import multiprocessing

    from vidtag.api import Settings
    from vidtag.errors import WeightsError

    with pytest.raises(WeightsError):
        annotate([videos], tmp_path / "out", ("coco",), Settings(weights=str(tmp_path / "missing.pt")), workers=2)
    for child in multiprocessing.active_children():
        child.join(timeout=30)
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
