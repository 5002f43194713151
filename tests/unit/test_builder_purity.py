"""The Job builder is pure: neither it nor anything it imports talks to the API."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "k8s_step_operator"


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_job_builder_imports_no_api_client() -> None:
    seen: set[str] = set()
    todo = ["job_builder"]
    external: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module):
            if name.startswith("k8s_step_operator."):
                todo.append(name.removeprefix("k8s_step_operator.").split(".")[0])
            else:
                external.add(name.split(".")[0])
    assert "job_builder" in seen and "settings" in seen
    assert not {"kubernetes", "urllib3", "_client", "_runner", "_watch"} & (external | seen)
