"""Settings and a step in, a batch/v1 Job (a plain dict) out: pure, no I/O, no API client.

Everything the project knows about the *shape* of Kubernetes objects lives here: label and
annotation keys, names, quantities, GPU vendors and label schemes, and the Job builder. It may
import ``k8s_step_operator._api``, ``k8s_step_operator._job.settings`` and
``k8s_step_operator._errors``; never the Kubernetes client, the runner or the Kubernetes layer.
"""
