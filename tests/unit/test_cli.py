from pathlib import Path

import pytest
import yaml

from k8s_step_operator.cli import main


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_prints_the_job_as_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    settings = tmp_path / "s.yaml"
    settings.write_text(
        "namespace: from-file\nimage: file:1\nshm_size: 1Gi\ngpu_count: 1\n"
        "pod_annotations:\n  sim.k8s-step-operator.io/run-duration: 2s\n",
        encoding="utf-8",
    )
    code, out, err = render(
        capsys,
        "--settings", str(settings),
        "--gpus", "2",
        "--gpu-type", "NVIDIA-H100-80GB-HBM3",
        "--image", "flag:2",
        "--cpu", "1.5",
        "--memory", "4GiB",
        "--env", "MODE=fast",
        "--step-name", "Train",
        "--", "python", "-c", "print('hi')",
    )  # fmt: skip
    assert code == 0, err
    assert err == ""
    job = yaml.safe_load(out)
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "from-file"
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == "flag:2"  # flags win over the file
    assert c["command"] == ["python", "-c", "print('hi')"]
    assert c["resources"]["limits"] == {"memory": "4Gi", "nvidia.com/gpu": "2"}
    assert c["resources"]["requests"]["cpu"] == "1500m"
    assert {"name": "MODE", "value": "fast"} in c["env"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["volumes"][0]["emptyDir"]["sizeLimit"] == "1Gi"
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sim.k8s-step-operator.io/run-duration"] == "2s"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--gpus", "x", "--", "a"], "--gpus"),
        (["--gpus", "-1", "--image", "i", "--", "a"], "settings.gpu_count"),
        (["--gpu-vendor", "foo", "--image", "i", "--", "a"], "settings.gpu_vendor"),
        (["--image", "i"], "command"),
        (["--", "a"], "settings.image or"),
        (["--settings", "/nonexistent/x.yaml", "--", "a"], "--settings"),
        (["--image", "i", "--memory", "3XB", "--", "a"], "--memory"),
        (["--image", "i", "--cpu", "0", "--", "a"], "--cpu"),
        (["--image", "i", "--env", "NOEQUALS", "--", "a"], "--env"),
        (["--image", "i", "--env", "HF_TOKEN=abc", "--", "a"], "secret_env"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = render(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err
    if "HF_TOKEN=abc" in argv:
        assert "abc" not in err  # a secret-looking value is never echoed


def test_settings_file_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpu_count: [\n", encoding="utf-8")
    code, _, err = render(capsys, "--settings", str(bad), "--", "a")
    assert code == 2 and "--settings" in err and len(err.strip().splitlines()) == 1
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n", encoding="utf-8")
    code, _, err = render(capsys, "--settings", str(listy), "--", "a")
    assert code == 2 and "mapping" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("gpus: 1\n", encoding="utf-8")
    code, _, err = render(capsys, "--settings", str(unknown), "--", "a")
    assert code == 2 and "settings.gpus" in err


def test_no_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["--help"]) == 0
