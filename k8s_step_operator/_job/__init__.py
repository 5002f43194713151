"""Settings and a step in, a batch/v1 Job (a plain dict) out: pure, no I/O, no API client.

Everything the project knows about the *shape* of Kubernetes objects lives here, one module per
concept: label and annotation keys (``keys``), names (``naming``), quantities (``quantity``),
syntax rules (``kube_syntax``), environment rules (``env``), GPU vendors and label schemes
(``gpu``), the settings with every default and bound (``settings``), the checked overrides
(``overrides``, a subpackage whose docstring says why and how), the one validation stage
(``step_checks``, producing a ``spec.StepSpec``), the assembly of the Job (``assemble``) and of
its Secret (``env_secret``), and ``builder``, which chains them. It may import
``k8s_step_operator._step_operator_api`` and ``k8s_step_operator._errors``; never the
Kubernetes client, the runner or the Kubernetes layer.
"""
