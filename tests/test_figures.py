"""README.md and benchmarks/RESULTS*.md agree with the committed results files (tools/render_figures.py)."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


def _load_renderer():
    """tools/ is not a package: import tools/render_figures.py by path (once)."""
    if "render_figures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("render_figures", REPO / "tools" / "render_figures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["render_figures"] = module
        spec.loader.exec_module(module)
    return sys.modules["render_figures"]


rf = _load_renderer()


def _copy_repo(tmp_path: Path) -> Path:
    """The documents and every file a block reads, copied into tmp_path (same layout)."""
    sources = {path for block in rf.BLOCKS.values() for path in block.sources}
    for doc in rf.documents(REPO):
        sources.add(doc.relative_to(REPO).as_posix())
    for rel in sources:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    return tmp_path


def test_readme_and_results_agree_with_the_results_files():
    problems = rf.run(REPO, check=True)
    assert problems == [], "\n".join(problems) + "\nrun: python tools/render_figures.py"


def test_every_block_is_in_a_document():
    names = {m["name"] for doc in rf.documents(REPO) for m in rf.BLOCK.finditer(doc.read_text())}
    assert names == set(rf.BLOCKS)


def test_an_altered_results_file_fails_the_check_and_rendering_repairs_it(tmp_path):
    root = _copy_repo(tmp_path)
    path = root / rf.E2E
    record = json.loads(path.read_text())
    record["rows"][0]["wall_s"] += 1.0
    path.write_text(json.dumps(record))

    assert rf.run(root, check=True) == [
        f"README.md: figures:e2e differs from {rf.E2E}",
        f"benchmarks/RESULTS.md: figures:e2e-table differs from {rf.E2E}",
    ]
    assert rf.run(root, check=False) == []
    assert rf.run(root, check=True) == []
    row = record["rows"][0]
    assert f"| {row['setting']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['peak_rss_mb']} |" in (root / "README.md").read_text()


def test_the_command_exits_1_naming_the_stale_block(tmp_path):
    root = _copy_repo(tmp_path)
    path = root / rf.CROSS_SCENE
    record = json.loads(path.read_text())
    record["results"][0]["scopes"]["confirm-synthetic"]["degraded_frames"] = 0.5
    path.write_text(json.dumps(record))
    command = [sys.executable, str(REPO / "tools" / "render_figures.py"), "--check", "--root", str(root)]

    stale = subprocess.run(command, capture_output=True, text=True)
    assert stale.returncode == 1
    assert "README.md: figures:cross-scene differs" in stale.stderr
    assert "README.md: figures:limits-temporal differs" in stale.stderr
    subprocess.run(command[:2] + ["--root", str(root)], check=True, capture_output=True)
    assert subprocess.run(command, capture_output=True).returncode == 0


def test_a_hand_edited_block_is_reported_and_rendered_back(tmp_path):
    root = _copy_repo(tmp_path)
    readme = root / "README.md"
    original = readme.read_text()
    begin = original.index("<!-- figures:runtime begin")
    figure = re.compile(r"\d+\.\d").search(original, original.index("-->", begin))  # the block's first figure
    digit = str((int(figure.group()[0]) + 1) % 10)  # a hand edit of one digit
    readme.write_text(original[: figure.start()] + digit + original[figure.start() + 1 :])

    assert rf.run(root, check=True) == [f"README.md: figures:runtime differs from {rf.RUNTIME}"]
    rf.run(root, check=False)
    assert readme.read_text() == original


def test_a_figure_typed_into_readme_outside_a_block_fails_the_check(tmp_path):
    root = _copy_repo(tmp_path)
    readme = root / "README.md"
    lines = readme.read_text().splitlines()
    lines.append("NanoDet-g runs at 61.44 frames/s on this machine.")
    readme.write_text("\n".join(lines) + "\n")

    assert rf.run(root, check=True) == [f"README.md:{len(lines)}: '61.44 frames/s' typed outside a generated block"]


def test_typed_figures_spares_thresholds_settings_sizes_and_code():
    text = "target >= 85% and < 2 s; 1280x720, 3x3 patches; `0.701 s`, `--conf 0.25`; 40% of frames\n"
    assert rf.typed_figures(text) == []
    text = "ran at 1.68x, 0.701 s, 61.44 frames/s, +97 MB peak, 77.4% of it, AP50 53.3, 117x faster\n"
    assert [figure for _, figure in rf.typed_figures(text)] == [
        "1.68x", "0.701 s", "61.44 frames/s", "97 MB", "77.4%", "AP50 5", "117x"]


def test_markers_must_pair_and_name_a_known_block():
    sources = rf.Sources(REPO)
    with pytest.raises(rf.FigureError, match="figures:nonexistent"):
        rf.render_document("<!-- figures:nonexistent begin -->\n<!-- figures:nonexistent end -->\n", sources)
    with pytest.raises(rf.FigureError, match="unpaired"):
        rf.render_document("text\n<!-- figures:e2e begin -->\nno end\n", sources)
    with pytest.raises(rf.FigureError, match="unpaired"):
        rf.render_document("<!-- figures:e2e end -->\n", sources)


def test_a_missing_results_file_is_named(tmp_path):
    root = _copy_repo(tmp_path)
    (root / rf.RUNTIME).unlink()
    problems = rf.run(root, check=True)
    assert problems == [f"README.md: {rf.RUNTIME}: missing (run the benchmark that writes it)",
                        f"benchmarks/RESULTS.md: {rf.RUNTIME}: missing (run the benchmark that writes it)"]


def test_prose_wraps_without_starting_a_list_quote_or_breaking_code():
    words = " ".join(f"word{i}" for i in range(12))
    text = f"- {words} ablation + RFU 52.3 / 83.0, + DenseFT 56.7, scores >= 0.3 and `a command with spaces` " * 4
    out = rf.prose(text)
    lines = out.splitlines()
    assert lines[0].startswith("- ") and all(line.startswith("  ") for line in lines[1:])
    assert not any(line.lstrip()[:2] in ("+ ", "- ", "* ", "> ") or line.lstrip().startswith(">") for line in lines[1:])
    assert out.count("`a command with spaces`") == 4
    assert " ".join(out.replace("- ", "", 1).split()) == " ".join(text[2:].split())


def _manifests():
    return [json.loads((REPO / path).read_text()) for path in (rf.IFF_MANIFEST, rf.IFF_BEFORE)]


def test_the_robustness_table_shows_the_box_weighted_columns_of_a_run_that_has_them():
    record = json.loads((REPO / rf.ROBUSTNESS).read_text())
    for r in record["results"]:  # a run from before the box-weighted columns
        for key in [k for k in r["pooled"] if k.endswith("_box_weighted")]:
            del r["pooled"][key]
    assert "box-weighted" not in rf.render_robustness(record, *_manifests())
    frame_row = next(r["pooled"] for r in record["results"] if (r["method"], r["link"]) == ("frame", "none"))
    for r in record["results"]:
        if r["method"] != "psla:cut=0":  # a row without them shows n/a
            r["pooled"].update({rf.box_weighted(k): 0.25 for k in (rf.DEGRADED, rf.WHOLE, rf.FIDELITY)})
    text = rf.render_robustness(record, *_manifests())
    assert "the box-weighted columns weigh each of those classes by its boxes" in " ".join(text.split())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| method |"))
    assert header == ("| method | AP50, degraded frames only | AP50, degraded frames only, box-weighted | AP50, whole degraded clip | "
                      "AP50, whole degraded clip, box-weighted | fidelity (clean clip) | fidelity (clean clip), box-weighted | "
                      "fidelity, every class | speed vs per-frame |")
    assert lines[lines.index(header) + 1] == "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert f"| per-frame | {rf.pct(frame_row[rf.DEGRADED])} | 25.0 | {rf.pct(frame_row[rf.WHOLE])} | 25.0 | " in text
    assert any(line.startswith("| psla / iff without the hard-cut handling |") and "| n/a / 25.0 |" in line for line in lines)


def test_the_robustness_text_names_the_iff_modules_its_run_used():
    record = json.loads((REPO / rf.ROBUSTNESS).read_text())
    shipped, before = _manifests()
    record["modules_sha256"]["iff"] = shipped["sha256"]
    assert "so their rows are in-scene" in " ".join(rf.render_robustness(record, shipped, before).split())
    record["modules_sha256"]["iff"] = before["sha256"]
    assert f"ran the modules shipped before (`weights/{before['name']}.json`)" in " ".join(rf.render_robustness(record, shipped, before).split())
    record["modules_sha256"]["iff"] = "0" * 64
    assert "(sha256 000000000000) that no manifest here names" in " ".join(rf.render_robustness(record, shipped, before).split())
