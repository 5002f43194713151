"""Doctor in one import: the command, the probe and the pure report.

``command`` has the subcommand (``add_parser``, ``main``), ``probe`` asks the API server
(``run_doctor``), ``report``, ``kueue`` and ``permissions`` are pure. Code that wants one of them
imports it from here or from its own module.
"""

from __future__ import annotations

from k8s_step_operator._doctor.command import add_parser, main
from k8s_step_operator._doctor.gpus import gpu_model_labels, is_gpu_resource
from k8s_step_operator._doctor.kueue import KueueReport, build_kueue
from k8s_step_operator._doctor.permissions import (
    AUTOSCALER_PERMISSIONS,
    KUEUE_PERMISSIONS,
    NODE_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    Permission,
)
from k8s_step_operator._doctor.probe import run_doctor
from k8s_step_operator._doctor.report import (
    AccessCheck,
    DoctorReport,
    GpuNode,
    PodSecurity,
    QuotaEntry,
    build_report,
    format_report,
)

__all__ = [
    "AUTOSCALER_PERMISSIONS",
    "KUEUE_PERMISSIONS",
    "NODE_PERMISSIONS",
    "OPERATOR_PERMISSIONS",
    "AccessCheck",
    "DoctorReport",
    "GpuNode",
    "KueueReport",
    "Permission",
    "PodSecurity",
    "QuotaEntry",
    "add_parser",
    "build_kueue",
    "build_report",
    "format_report",
    "gpu_model_labels",
    "is_gpu_resource",
    "main",
    "run_doctor",
]
