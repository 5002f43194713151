"""The stack check: a stack whose step pods could not reach ZenML's stores is refused at once.

ZenML runs it when a pipeline is submitted (``Stack.validate``), before anything is sent to the
cluster, and shows the message as the reason. Each refusal is one message saying what would
work. A stack that passes works as it is: with a ZenML server the pods reach the server (the API
token the run gets travels in the Job's own Secret), and in local mode they share this machine's
local stores through a PersistentVolumeClaim.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StackFacts", "check_stack"]


@dataclass(frozen=True)
class StackFacts:
    """What the check needs to know about the stack and this machine.

    Attributes:
        component: The step operator's component name.
        local: Whether the component is in local mode.
        claim: Its ``local_stores_claim``.
        restricted: Whether its steps run under the "restricted" Pod Security profile.
        run_as_user: Its ``run_as_user`` setting.
        uid: This process's UID (local mode runs the pods as it by default).
        store_is_local: Whether the ZenML store is local (a SQLite file, or a local server).
        store_url: The store's URL.
        artifact_store: The artifact store's component name.
        artifact_store_is_local: Whether the artifact store is a local directory.
        stores_path: The directory of ZenML's local stores on this machine.
    """

    component: str
    local: bool
    claim: str | None
    restricted: bool
    run_as_user: int | None
    uid: int
    store_is_local: bool
    store_url: str
    artifact_store: str
    artifact_store_is_local: bool
    stores_path: str


def check_stack(facts: StackFacts) -> tuple[bool, str]:
    """``(True, "")`` when the step pods can work with this stack, else ``(False, why)``."""
    name = facts.component
    if facts.local:
        if not facts.claim:
            return False, (
                f"step operator '{name}' is in local mode but names no PersistentVolumeClaim: "
                f"create a claim in the steps' namespace whose volume is {facts.stores_path} "
                "on the node that runs the steps, then run `zenml step-operator update "
                f"{name} --local_stores_claim=<claim>`."
            )
        user = facts.run_as_user if facts.run_as_user is not None else facts.uid
        if facts.restricted and user == 0:
            return False, (
                f"step operator '{name}' in local mode runs its pods as this process's user so "
                f"that they can write {facts.stores_path}, but this process runs as root, "
                "which the 'restricted' Pod Security profile refuses: run ZenML as a non-root "
                f"user who owns {facts.stores_path}, or run `zenml step-operator update {name} "
                "--pod_security_profile=none` where the namespace allows root pods."
            )
        return True, ""
    problems: list[str] = []
    if facts.store_is_local:
        problems.append(f"the ZenML store is local ({facts.store_url})")
    if facts.artifact_store_is_local:
        problems.append(f"the artifact store '{facts.artifact_store}' is a local directory")
    if not problems:
        return True, ""
    return False, (
        f"step operator '{name}' runs steps in pods on a Kubernetes cluster, but "
        f"{' and '.join(problems)}, which those pods cannot reach. Either connect to a ZenML "
        "server the pods can reach (`zenml login <url>`) and use a remote artifact store, or, "
        f"if the cluster's pods can mount {facts.stores_path} through a PersistentVolumeClaim "
        f"at the same path, use local mode: `zenml step-operator update {name} --local=true "
        "--local_stores_claim=<claim>`."
    )
