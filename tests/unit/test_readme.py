"""The README's configuration reference is generated from the models and must match them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "tools" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["config_reference"] = mod
    spec.loader.exec_module(mod)
    current = (ROOT / "README.md").read_text()
    assert mod.render(current) == current, (
        "README reference is stale: run tools/config_reference.py"
    )
    for name in ("gpu_type", "pending_timeout", "kubeconfig_path", "shm_size", "queue_name"):
        assert f"| `{name}` |" in current


def _blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    parts = text.split(f"```{language}\n")[1:]
    return [p.split("```", 1)[0] for p in parts]


def test_python_snippets_run() -> None:
    # Every Python snippet runs as written, except that nothing is sent to a cluster: launch is
    # swapped for build_job, which validates everything launch would submit. ZenML's snippets
    # run in the ZenML environment (tests/zenml_integration/test_zenml_readme.py).
    namespace: dict[str, object] = {}
    for block in _blocks("python"):
        if "from zenml" in block:
            continue
        code = block.replace("operator.launch(", "operator.build_job(")
        exec(compile(code, "README.md", "exec"), namespace)
    assert "command" in namespace
