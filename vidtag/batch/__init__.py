"""Many videos: discovery, per-video isolation, the run ledger, resume.

``vidtag-run.json`` in the output folder holds one record per input video
(see the spec in README).  It is rewritten atomically after every video, so
after a crash or Ctrl-C it tells the truth about what is complete.  A rerun
skips videos already done with the same options and redoes the rest, and
first removes what a killed run left half-written (its staging folders and
temporary files), which no reader ever took for an output.

The modules, by what they own:

* ``discovery``: files and folders -> :class:`VideoTask` s whose outputs
  never collide (:func:`find_videos`);
* ``ledger``: ``vidtag-run.json`` and its records (:class:`Manifest`,
  :class:`RunRecord`);
* ``output_dir``: the output folder: writable, locked against a second run
  (:class:`OutputLock`), cleared of a killed run's leftovers;
* ``scheduling``: the two schedulers, :func:`run_batch` (one video after the
  other, in this process) and :func:`run_batch_parallel` (on an
  :class:`Executor`: worker processes, a Ray cluster).
"""

from vidtag.batch.discovery import ANNOTATED_SUFFIX, VIDEO_SUFFIXES, VideoTask, find_videos
from vidtag.batch.ledger import MANIFEST_NAME, Manifest, OutputFile, RunRecord, atomic_write_text, fingerprint, options_key
from vidtag.batch.output_dir import LOCK_NAME, OutputLock, prepare_output_dir, remove_leftovers
from vidtag.batch.scheduling import BatchSummary, EventFn, Executor, error_line, process_video, run_batch, run_batch_parallel

__all__ = [
    "ANNOTATED_SUFFIX",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "VIDEO_SUFFIXES",
    "BatchSummary",
    "EventFn",
    "Executor",
    "Manifest",
    "OutputFile",
    "OutputLock",
    "RunRecord",
    "VideoTask",
    "atomic_write_text",
    "error_line",
    "find_videos",
    "fingerprint",
    "options_key",
    "prepare_output_dir",
    "process_video",
    "remove_leftovers",
    "run_batch",
    "run_batch_parallel",
]
