"""The only code that talks to the API server through the official client.

Client configuration (kubeconfig, context, in-cluster), the calls the operator makes, and the one
translation of the client's exceptions into ``k8s_step_operator._errors``. It may import
``k8s_step_operator._errors`` and ``k8s_step_operator._job`` (for keys); never the runner,
the operator or the command line.
"""
