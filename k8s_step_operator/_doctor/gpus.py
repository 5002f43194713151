"""Which resource names are GPUs, and which node labels name the GPU model. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping

from k8s_step_operator._job.gpu import GPU_LABEL_SCHEMES, GPU_VENDORS, GPULabelScheme

__all__ = ["gpu_model_labels", "is_gpu_resource"]

# Accelerator resources beyond the vendors of ``gpu.GPU_VENDORS``: exact names, and prefixes.
_EXTRA_GPU_RESOURCES = ("nvidia.com/gpu.shared", "habana.ai/gaudi")
_GPU_RESOURCE_PREFIXES = ("nvidia.com/mig-", "gpu.intel.com/", "aws.amazon.com/neuron")

# Where the GPU model is written, first match wins: the label schemes of ``gpu`` (GPU feature
# discovery, GKE, Karpenter, then any other in the table), then the AMD node labeller's.
_EXTRA_MODEL_LABELS = ("amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")


def is_gpu_resource(key: str) -> bool:
    """Whether a resource name (as in node capacity) is a vendor GPU/accelerator resource."""
    return (
        any(v.resource == key for v in GPU_VENDORS.values())
        or key in _EXTRA_GPU_RESOURCES
        or key.startswith(_GPU_RESOURCE_PREFIXES)
    )


def gpu_model_labels(
    label_schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES,
) -> tuple[str, ...]:
    """The node labels that may name the GPU model, in the order they are tried."""
    order = {"gpu-feature-discovery": 0, "gke": 1, "karpenter": 2}
    schemes = sorted(
        label_schemes.values(), key=lambda sc: (order.get(sc.name, len(order)), sc.name)
    )
    return tuple(dict.fromkeys([sc.label_key for sc in schemes] + list(_EXTRA_MODEL_LABELS)))
