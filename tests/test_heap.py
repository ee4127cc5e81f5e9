"""vidtag.heap: malloc keeps the pages of freed tensors for the next frame (glibc only)."""

import subprocess
import sys

import pytest

PROBE = """
import resource
import vidtag, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # warm-up: the heap settles after a few rounds of aligned 40 MB blocks
    x = torch.ones(10_000_000); del x   # 40 MB: above any mmap threshold glibc would pick
before = faults()
for _ in range(10):
    x = torch.ones(10_000_000); del x
print(faults() - before)
"""


def minor_faults(tuning: str) -> int:
    env = {"VIDTAG_MALLOC_TUNING": tuning, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_tensor_pages_are_reused_instead_of_faulted_in_again():
    page_faults_per_tensor = 40_000_000 // 4096  # ~9,800 when its pages come fresh from the kernel
    tuned, plain = minor_faults("1"), minor_faults("0")
    assert plain > 5 * page_faults_per_tensor  # glibc's default: mmap and munmap every time
    assert tuned < page_faults_per_tensor  # vidtag's settings: the heap keeps them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_a_library_import_leaves_malloc_alone_and_the_command_tunes_it():
    """Without VIDTAG_MALLOC_TUNING, `import vidtag` changes nothing; importing the command does."""
    page_faults_per_tensor = 40_000_000 // 4096
    env = {"PATH": ""}
    library = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    command = subprocess.run([sys.executable, "-c", "import vidtag.cli\n" + PROBE], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
    assert int(library.stdout.split()[-1]) > 5 * page_faults_per_tensor
    assert int(command.stdout.split()[-1]) < page_faults_per_tensor
    lazy = subprocess.run([sys.executable, "-c", "import sys, vidtag; print('numpy' in sys.modules); from vidtag import Detections"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    assert lazy.stdout.split()[0] == "False"
