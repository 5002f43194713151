"""``doctor``: what the operator's identity may do in a namespace, and which GPUs it can reach."""
