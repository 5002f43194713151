"""The step-operator API of ZenML, usable without ZenML: what a pipeline author codes against.

Stack components, flavors, ``BaseStepOperator``, ``StepRunInfo``, resource settings and the
entrypoint configurations. This layer knows nothing of Kubernetes: it may import only
``k8s_step_operator._errors`` and pydantic, never the Kubernetes client or the other layers.
"""
