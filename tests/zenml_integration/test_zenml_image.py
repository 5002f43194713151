"""The ZenML step image holds what ZenML's production stack needs in its pods: the requirements
of ZenML's kubernetes and s3 integrations as this ZenML states them (``e2e/images/build.py``
keeps a copy, so that building the image needs no ZenML), and they resolve with the project's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

zenml = pytest.importorskip("zenml")

REPO = Path(__file__).resolve().parents[2]


def build_script() -> ModuleType:
    name = "k8sso_images_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "e2e" / "images" / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_images_integration_requirements_are_zenmls() -> None:
    from zenml.integrations.registry import integration_registry

    build = build_script()
    theirs: list[str] = []
    for integration in build.ZENML_INTEGRATIONS:
        theirs += integration_registry.select_integration_requirements(integration)
    assert sorted(build.ZENML_INTEGRATION_REQUIREMENTS) == sorted(theirs)
    requirements = build.zenml_requirements()
    assert set(build.ZENML_INTEGRATION_REQUIREMENTS) <= set(requirements)
    assert any(r.startswith("zenml[local]") for r in requirements)


def test_this_environment_resolved_them_together() -> None:
    """The ZenML environment installs the same set (``make venv-zenml``): all importable."""
    import importlib.metadata as md

    for dist in ("s3fs", "boto3", "Jinja2", "kubernetes", "aws-profile-manager"):
        assert md.version(dist)
    assert md.version("kubernetes").startswith("25.")
