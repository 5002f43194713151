"""How a GPU request becomes resources, node labels and tolerations.

Vendors differ in three things: the extended resource their device plugin advertises, the taint
their node pools carry, and whether MIG partitions exist. Clusters differ in which label names the
GPU model: GPU feature discovery, GKE and Karpenter each have their own. Both tables are
immutable, and both are open without being changed: any extended resource key
(``example.com/fpga``) is a vendor, and a caller with a scheme of its own passes a table that
holds it (``build_job(..., gpu_label_schemes=...)``). What a Job looks like never depends on
what some other code did earlier in the process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.kube_syntax import is_qualified_name

__all__ = [
    "GPU_LABEL_SCHEMES",
    "GPU_VENDORS",
    "GPULabelScheme",
    "GPUVendor",
    "get_gpu_label_scheme",
    "gpu_label_schemes",
    "is_mig_profile",
    "mig_resource",
    "resolve_gpu_vendor",
]


@dataclass(frozen=True)
class GPUVendor:
    """A GPU (or accelerator) vendor as the cluster sees it.

    Attributes:
        name: The short name (``nvidia``) or the resource key for custom accelerators.
        resource: The extended resource requested, e.g. ``nvidia.com/gpu``.
        taint_key: The taint key GPU node pools of this vendor carry; tolerated automatically.
        supports_mig: Whether MIG profiles (``nvidia.com/mig-<profile>``) exist.
        label_scheme: The label scheme used for ``gpu_type`` when none is set, if the vendor's
            tooling labels nodes with the model.
    """

    name: str
    resource: str
    taint_key: str
    supports_mig: bool = False
    label_scheme: str | None = None


GPU_VENDORS: Mapping[str, GPUVendor] = MappingProxyType(
    {
        "nvidia": GPUVendor(
            "nvidia",
            "nvidia.com/gpu",
            "nvidia.com/gpu",
            supports_mig=True,
            label_scheme="gpu-feature-discovery",
        ),
        "amd": GPUVendor("amd", "amd.com/gpu", "amd.com/gpu", label_scheme="amd-node-labeller"),
        "intel": GPUVendor("intel", "gpu.intel.com/i915", "gpu.intel.com/i915"),
    }
)

_VENDOR_RULE = (
    "one of " + ", ".join(sorted(GPU_VENDORS)) + ", or an extended resource key such as "
    "'example.com/fpga' (a domain prefix outside kubernetes.io, then '/', then a name)"
)


def resolve_gpu_vendor(field: str, value: str) -> GPUVendor:
    """The vendor named ``value``: a known short name or an extended resource key.

    Raises:
        ConfigurationError: If ``value`` is neither.
    """
    known = GPU_VENDORS.get(value)
    if known is not None:
        return known
    prefix, slash, _ = value.rpartition("/")
    # Extended resources need a domain prefix; kubernetes.io names are native resources and
    # "requests." prefixes are quota syntax: the API server refuses both as limits.
    if (
        slash
        and is_qualified_name(value)
        and "." in prefix
        and not (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"))
        and not value.startswith("requests.")
    ):
        return GPUVendor(value, value, value)
    raise ConfigurationError(field, _VENDOR_RULE, value)


# NVIDIA's profile names: <compute slices>g.<memory>gb, e.g. 1g.5gb, 3g.40gb, 1g.10gb.
_MIG_PROFILE = re.compile(r"[1-7]g\.[1-9][0-9]{0,2}gb")


def is_mig_profile(profile: str) -> bool:
    """Whether ``profile`` is written as NVIDIA names MIG profiles (``1g.5gb``)."""
    return isinstance(profile, str) and _MIG_PROFILE.fullmatch(profile) is not None


def mig_resource(field: str, vendor: GPUVendor, profile: str) -> str:
    """The extended resource for a MIG profile: ``nvidia.com/mig-<profile>``.

    Raises:
        ConfigurationError: If the vendor has no MIG, or the profile is malformed.
    """
    if not vendor.supports_mig:
        raise ConfigurationError(
            field, "no MIG profile: MIG exists only for gpu_vendor 'nvidia'", profile
        )
    if not is_mig_profile(profile):
        raise ConfigurationError(
            field, "a MIG profile '<slices>g.<memory>gb' such as '1g.5gb' or '3g.40gb'", profile
        )
    return f"nvidia.com/mig-{profile}"


def _identity(value: str) -> str:
    return value


@dataclass(frozen=True)
class GPULabelScheme:
    """Which node label names the GPU model, and how a model name is written in it.

    Attributes:
        name: The scheme's name, used in ``settings.gpu_label_scheme``.
        label_key: The node label key.
        normalize: Maps the model the user wrote to the label's vocabulary.
        aliases: Short model names (``H100``) and the label values they stand for; a node whose
            label has any of them matches. Compared without regard to case.

    Raises:
        ConfigurationError: If the label key is not a valid label key.
    """

    name: str
    label_key: str
    normalize: Callable[[str], str] = _identity
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not is_qualified_name(self.label_key):
            raise ConfigurationError(
                "GPULabelScheme.label_key", "a valid label key", self.label_key
            )

    def expand(self, model: str) -> tuple[str, ...] | None:
        """The label values a short model name stands for, or ``None`` if it is not an alias."""
        wanted = model.lower()
        for alias, values in self.aliases:
            if alias.lower() == wanted:
                return values
        return None


# GPU feature discovery writes the driver's product name with spaces as dashes. A short model
# name stands for the variants of that model; the full label value is always accepted as is.
_GFD_ALIASES = (
    (
        "H100",
        (
            "NVIDIA-H100-80GB-HBM3",
            "NVIDIA-H100-SXM5-80GB",
            "NVIDIA-H100-PCIe",
            "NVIDIA-H100-NVL",
        ),
    ),
    ("H200", ("NVIDIA-H200", "NVIDIA-H200-NVL")),
    (
        "A100",
        (
            "NVIDIA-A100-SXM4-80GB",
            "NVIDIA-A100-SXM4-40GB",
            "NVIDIA-A100-80GB-PCIe",
            "NVIDIA-A100-PCIE-40GB",
        ),
    ),
    ("L40S", ("NVIDIA-L40S",)),
    ("L4", ("NVIDIA-L4",)),
    ("A10G", ("NVIDIA-A10G",)),
    ("T4", ("Tesla-T4",)),
)
_GKE_ALIASES = (
    ("H100", ("nvidia-h100-80gb", "nvidia-h100-mega-80gb")),
    ("H200", ("nvidia-h200-141gb",)),
    ("A100", ("nvidia-tesla-a100", "nvidia-a100-80gb")),
    ("L4", ("nvidia-l4",)),
    ("T4", ("nvidia-tesla-t4",)),
)

# The schemes Jobs are built with unless the caller passes its own table, by name; a table with
# one more scheme is ``{**GPU_LABEL_SCHEMES, scheme.name: scheme}``.
GPU_LABEL_SCHEMES: Mapping[str, GPULabelScheme] = MappingProxyType(
    {
        scheme.name: scheme
        for scheme in (
            GPULabelScheme("gpu-feature-discovery", "nvidia.com/gpu.product", aliases=_GFD_ALIASES),
            GPULabelScheme("amd-node-labeller", "amd.com/gpu.product-name"),
            GPULabelScheme("gke", "cloud.google.com/gke-accelerator", aliases=_GKE_ALIASES),
            # Karpenter's values are lower-case model names (a100, t4, l4).
            GPULabelScheme("karpenter", "karpenter.k8s.aws/instance-gpu-name", str.lower),
        )
    }
)


def gpu_label_schemes(
    schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES,
) -> tuple[str, ...]:
    """The names of the schemes in ``schemes``, sorted."""
    return tuple(sorted(schemes))


def get_gpu_label_scheme(
    field: str, name: str, schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES
) -> GPULabelScheme:
    """The scheme called ``name`` in ``schemes``.

    Raises:
        ConfigurationError: If no scheme has that name.
    """
    scheme = schemes.get(name)
    if scheme is None:
        raise ConfigurationError(
            field,
            "one of " + ", ".join(gpu_label_schemes(schemes)) + " (or set gpu_label_key)",
            name,
        )
    return scheme
