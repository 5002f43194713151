"""Deterministic, collision-free Kubernetes names for a step's Job, one per attempt.

The Job's name is a pure function of (run id, step name, step run id). A caller restarted in the
middle of a step has the same three and computes the same name, so it finds its Job again (a 409
on create means "adopt", not "retry with another name"). A retried step is a new step run (ZenML
gives each attempt its own step run id) and gets a new Job, instead of adopting the failed one.
Different triples get different names because a 64-bit hash of all three is part of the name;
the readable slug in front is only for humans. The raw strings live in annotations, which accept
anything; ``same_step`` reads them to tell our Job from another run's or another attempt's.

``job_name(run_id, step_name)`` without a step run id is the name of releases that had one Job
per (run, step); it is kept for code that computes it.

A step of several ranks (``ranks > 1``) has a shorter slug, starting with a letter: the Job
controller names each rank's host ``<job>-<index>`` (a DNS label of at most 63 characters), and
the headless Service that makes the ranks resolvable carries the Job's name (a DNS-1035 label,
which starts with a letter). The hash is the same, so only slugs of more than 41 characters, or
starting with a digit, differ from the one-pod name.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from k8s_step_operator._job.keys import (
    ANNOTATION_RUN_ID,
    ANNOTATION_STEP_NAME,
    ANNOTATION_STEP_RUN_ID,
)
from k8s_step_operator._job.kube_syntax import is_label_value

__all__ = [
    "job_name",
    "label_value",
    "same_step",
]

_HASH_CHARS = 16  # 64 bits: collisions are out of reach for any realistic number of steps
_MAX_NAME = 63  # the Job controller copies the name into a pod label value
# Room a rank's hostname ``<job>-<index>`` needs after the name: a dash and four digits
# (settings.MAX_NODES is 10 000, so indexes up to 9999).
_INDEX_ROOM = 5
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def _digest(*parts: str, chars: int = _HASH_CHARS) -> str:
    # JSON keeps the parts apart: ("a-b", "c") and ("a", "b-c") hash differently.
    encoded = json.dumps(list(parts), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(encoded).hexdigest()[:chars]


def _slug(text: str, max_len: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:max_len].rstrip("-")


def job_name(run_id: str, step_name: str, step_run_id: str | None = None, *, ranks: int = 1) -> str:
    """The Job name of one attempt of ``step_name`` in run ``run_id``: ``<step slug>-<hash>``.

    Always a DNS-1123 label of at most 63 characters; equal inputs give equal names. A UUID
    (as ZenML passes ids) names the same Job as its string form. Without ``step_run_id``, the
    name that releases with one Job per (run, step) used. With ``ranks > 1`` the name is also a
    DNS-1035 label (it starts with a letter) that leaves room for ``-<index>`` within 63
    characters.
    """
    parts = [str(run_id), str(step_name)]
    if step_run_id is not None:
        parts.append(str(step_run_id))
    suffix = _digest(*parts)
    room = _MAX_NAME - _HASH_CHARS - 1
    if ranks <= 1:
        return f"{_slug(parts[1], room) or 'step'}-{suffix}"
    slug = _slug(parts[1], room) or "step"
    if not slug[:1].isalpha():
        slug = "s" + slug
    slug = slug[: room - _INDEX_ROOM].rstrip("-")
    return f"{slug}-{suffix}"


def label_value(text: str) -> str:
    """``text`` as a label value: unchanged when valid, else ``<slug>-<hash>`` (deterministic).

    The hash keeps distinct inputs apart after sanitizing; the exact string is in annotations.
    """
    if is_label_value(text):
        return text
    suffix = _digest(text, chars=8)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    slug = slug[: 63 - len(suffix) - 1]
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)
    return f"{slug}-{suffix}" if slug else suffix


def _annotations(job: Any) -> Mapping[str, Any]:
    if isinstance(job, Mapping):
        metadata = job.get("metadata") or {}
        if isinstance(metadata, Mapping):
            annotations = metadata.get("annotations") or {}
        else:
            annotations = getattr(metadata, "annotations", None) or {}
    else:
        metadata = getattr(job, "metadata", None)
        annotations = getattr(metadata, "annotations", None) or {}
    return annotations if isinstance(annotations, Mapping) else {}


def same_step(
    job: Mapping[str, Any], run_id: str, step_name: str, step_run_id: str | None = None
) -> bool:
    """True when ``job`` (a Job as a dict, or a client ``V1Job``) runs ``step_name`` of ``run_id``.

    Reads the raw ids and step name from the Job's annotations; a Job without them is not ours.
    With ``step_run_id``, the Job must also be that attempt's: a Job of an earlier attempt of the
    same step is not the same step run.
    """
    annotations = _annotations(job)
    if step_run_id is not None and annotations.get(ANNOTATION_STEP_RUN_ID) != str(step_run_id):
        return False
    return annotations.get(ANNOTATION_RUN_ID) == str(run_id) and annotations.get(
        ANNOTATION_STEP_NAME
    ) == str(step_name)
