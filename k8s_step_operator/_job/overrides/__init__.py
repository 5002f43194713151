"""The escape hatch: pod-spec and container fields the settings do not model, checked.

``pod_spec_overrides`` and ``container_overrides`` pass Kubernetes fields through, so they are
where a Job could still reach the API server and be refused, or be admitted and then break the
pod. Three stages keep that from happening:

* **shape** (``shape``: ``check_pod_spec_overrides``, ``check_container_overrides``, run by the
  settings model at construction): only known keys, each with the type and syntax the API server
  validates (names, paths, ports, quantities, enums, exactly one volume source or probe
  handler...). Unknown nested keys are refused rather than passed on unchecked: what is not
  checked here could be refused by the server, which this library promises never happens.
* **fit** (``fit``: ``check_overrides_fit``, run by the validation stage): what depends on other
  settings or on the fields the builder sets itself. Volume and container names must not collide
  with ours; mounts must name a volume; a host port must be unique; a ``sleep`` must end within
  the grace period; and, under the Pod Security "restricted" profile, nothing may contradict it:
  host network, host ports, volume types other than configMap, csi, downwardAPI, emptyDir,
  ephemeral, persistentVolumeClaim, projected and secret, and init containers that are
  privileged, escalate privileges, add capabilities other than NET_BIND_SERVICE, keep
  capabilities, run as root, or use unconfined seccomp or AppArmor or a custom SELinux type.
* **apply** (``restricted``: ``harden_init_containers``, run by the assembler): init containers
  run in the same pod and Pod Security judges them too, so the profile's container settings are
  filled in where an init container left them unset. The fit stage guarantees nothing it fills
  in contradicts what the user wrote.

Errors name the override as written: ``settings.pod_spec_overrides['initContainers'][0]
.securityContext.privileged``, and say what would work (drop the field, or choose
``pod_security_profile='none'``).

The modules, one concept each: ``allowed`` (the keys an override may set, with why the others
are not), ``checkers`` (the small checkers the tables are written with), the field tables
``volumes``, ``containers`` and ``pod_fields``, the stages ``shape`` and ``fit``, and
``restricted`` (the profile: what it refuses and what it fills in).
"""

from __future__ import annotations

from k8s_step_operator._job.overrides.allowed import (
    ALLOWED_CONTAINER_OVERRIDE_KEYS,
    ALLOWED_POD_SPEC_OVERRIDE_KEYS,
)
from k8s_step_operator._job.overrides.fit import check_overrides_fit
from k8s_step_operator._job.overrides.restricted import (
    RESTRICTED_CAPABILITIES,
    RESTRICTED_CONTAINER_CONTEXT,
    RESTRICTED_VOLUME_TYPES,
    harden_init_containers,
)
from k8s_step_operator._job.overrides.shape import (
    check_container_overrides,
    check_pod_spec_overrides,
)

__all__ = [
    "ALLOWED_CONTAINER_OVERRIDE_KEYS",
    "ALLOWED_POD_SPEC_OVERRIDE_KEYS",
    "RESTRICTED_CAPABILITIES",
    "RESTRICTED_CONTAINER_CONTEXT",
    "RESTRICTED_VOLUME_TYPES",
    "check_container_overrides",
    "check_overrides_fit",
    "check_pod_spec_overrides",
    "harden_init_containers",
]
