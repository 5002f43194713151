"""``doctor``: what the operator's identity may do in a namespace, and which GPUs it can reach.

Most failed first runs are not bugs in the step but a missing RBAC verb, a namespace whose Pod
Security level rejects the pod, a GPU quota already used up, a Kueue queue without GPU quota, or
GPU nodes that do not advertise the resource the step asks for. Doctor answers those questions up
front, as the identity the pipeline will use. Its modules:

- ``permissions``: the verbs the operator needs, as the chart grants them (pure);
- ``gpus``: which resources are GPUs and which node labels name the model (pure);
- ``report``: API JSON in, a frozen ``DoctorReport`` out, and its text form (pure);
- ``kueue``: the namespace's LocalQueues and their ClusterQueues' GPU quota (pure);
- ``probe``: the only module that talks to the API server, through ``_kube.client``;
- ``command``: the ``doctor`` subcommand's arguments;
- ``doctor``: all of the above in one import.

It may import ``_objects`` (the shapes of the API's JSON), ``_errors``, ``_job`` (GPU vendors,
label schemes, name rules) and ``_kube``; never the runner, the operator or the command line.
"""
