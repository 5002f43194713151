"""Which resource names are GPUs, and which node labels name the GPU model. Pure: no I/O."""

from __future__ import annotations

from k8s_step_operator._job.gpu import GPU_VENDORS, get_gpu_label_scheme, gpu_label_schemes

__all__ = ["gpu_model_labels", "is_gpu_resource"]

# Accelerator resources beyond the vendors of ``gpu.GPU_VENDORS``: exact names, and prefixes.
_EXTRA_GPU_RESOURCES = ("nvidia.com/gpu.shared", "habana.ai/gaudi")
_GPU_RESOURCE_PREFIXES = ("nvidia.com/mig-", "gpu.intel.com/", "aws.amazon.com/neuron")

# Where the GPU model is written, first match wins: the label schemes of ``gpu`` (GPU feature
# discovery, GKE, Karpenter and any registered later), then the AMD node labeller's.
_EXTRA_MODEL_LABELS = ("amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")


def is_gpu_resource(key: str) -> bool:
    """Whether a resource name (as in node capacity) is a vendor GPU/accelerator resource."""
    return (
        any(v.resource == key for v in GPU_VENDORS.values())
        or key in _EXTRA_GPU_RESOURCES
        or key.startswith(_GPU_RESOURCE_PREFIXES)
    )


def gpu_model_labels() -> tuple[str, ...]:
    """The node labels that may name the GPU model, in the order they are tried."""
    schemes = [get_gpu_label_scheme("gpu_label_scheme", name) for name in gpu_label_schemes()]
    order = {"gpu-feature-discovery": 0, "gke": 1, "karpenter": 2}
    schemes.sort(key=lambda sc: (order.get(sc.name, len(order)), sc.name))
    return tuple(dict.fromkeys([sc.label_key for sc in schemes] + list(_EXTRA_MODEL_LABELS)))
