import argparse
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

import k8s_step_operator
from k8s_step_operator import (
    ApiError,
    ConfigurationError,
    ForbiddenError,
    NameCollisionError,
    NotFoundError,
    OOMKilledError,
    ServerUnavailableError,
    StepCancelledError,
    StepError,
    TooManyRequestsError,
)
from k8s_step_operator._runner.signals import Terminated as _Terminated
from k8s_step_operator.cli import EXIT_CODES, build_parser, exit_code, main
from k8s_step_operator.cli._outcome import _describe_api
from k8s_step_operator.cli._run import run_settings

ROOT = Path(__file__).resolve().parents[2]


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


def test_render_nodes_makes_an_indexed_job(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(
        capsys, "--nodes", "4", "--gpus", "8", "--image", "i:1", "--", "torchrun", "train.py"
    )
    assert code == 0, err
    job = yaml.safe_load(out)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WORLD_SIZE"] == "32" and env["NNODES"] == "4"
    code, _, err = render(capsys, "--nodes", "0", "--image", "i:1", "--", "x")
    assert code == 2 and "settings.num_nodes" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--gpus", "x", "--", "a"], "--gpus"),
        (["--gpus", "-1", "--image", "i", "--", "a"], "settings.gpu_count"),
        (["--gpu-vendor", "foo", "--image", "i", "--", "a"], "settings.gpu_vendor"),
        (["--image", "i"], "command"),
        (["--", "a"], "--image: expected the step's container image"),
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


def test_a_mistyped_flag_or_setting_names_the_closest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = render(capsys, "--memroy", "16GiB", "--image", "a:1", "--", "a")
    assert code == 2 and out == ""
    assert "--memroy: did you mean --memory?" in err
    assert main(["run", "--pending-timout", "5", "--", "a"]) == 2
    assert "did you mean --pending-timeout?" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("shm_sise: 16Gi\n", encoding="utf-8")
    code, _, err = render(capsys, "--settings", str(typo), "--image", "a:1", "--", "a")
    assert code == 2
    assert "settings.shm_sise: expected one of the known settings: did you mean 'shm_size'?" in err
    assert "The others: active_deadline_seconds, affinity" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--gpu-type", "NVIDIA-H100-80GB-HBM3"], "--gpu-type"),
        (["--gpus", "0", "--gpu-type", "NVIDIA-H100-80GB-HBM3"], "--gpu-type"),
        (["--mig-profile", "1g.10gb"], "--mig-profile"),
        (["--gpu-vendor", "amd"], "--gpu-vendor"),
    ],
)
def test_gpu_flags_without_a_gpu_count_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], field: str
) -> None:
    # Without a count the Job asks for no GPU: it would run, CPU-only, on any node.
    code, out, err = render(capsys, *argv, "--image", "a:1", "--", "a")
    assert code == 2 and out == ""
    assert f"error: {field}: expected a GPU count as well (--gpus N" in err


def test_a_gpu_type_from_the_settings_file_needs_a_count_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = tmp_path / "s.yaml"
    settings.write_text("gpu_type: NVIDIA-H100-80GB-HBM3\n", encoding="utf-8")
    code, _, err = render(capsys, "--settings", str(settings), "--image", "a:1", "--", "a")
    assert code == 2 and "settings.gpu_type: expected a GPU count as well" in err
    settings.write_text("gpu_type: NVIDIA-H100-80GB-HBM3\ngpu_count: 1\n", encoding="utf-8")
    code, out, err = render(capsys, "--settings", str(settings), "--image", "a:1", "--", "a")
    assert code == 0, err
    assert yaml.safe_load(out)["spec"]["template"]["spec"]["nodeSelector"]


def test_no_subcommand_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["--help"]) == 0


# -- kubectl's conventions ---------------------------------------------------------------------


def write_kubeconfig(path: Path, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "c", "context": context},
                    {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "o"}},
                ],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No KUBECONFIG, an empty home, not in a pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"k8s-step-operator {k8s_step_operator.__version__}\n"


def test_render_json_is_the_same_job(capsys: pytest.CaptureFixture[str], no_cluster: Path) -> None:
    argv = ("--image", "i:1", "--gpus", "1", "--", "python", "-m", "train")
    code, as_yaml, _ = render(capsys, *argv)
    assert code == 0
    code, as_json, err = render(capsys, "-o", "json", *argv)
    assert code == 0, err
    assert json.loads(as_json) == yaml.safe_load(as_yaml)
    code, _, err = render(capsys, "-o", "xml", *argv)
    assert code == 2 and "invalid choice: 'xml'" in err


def namespace_of(out: str) -> str:
    return str(yaml.safe_load(out)["metadata"]["namespace"])


def test_render_namespace_like_kubectl(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    no_cluster: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ("--image", "i:1", "--", "true")
    # No kubeconfig anywhere: default, offline.
    assert namespace_of(render(capsys, *argv)[1]) == "default"
    # ~/.kube/config's context, then $KUBECONFIG's, then --kubeconfig/--context, then -n.
    (no_cluster / ".kube").mkdir()
    write_kubeconfig(no_cluster / ".kube" / "config", "home-ns")
    assert namespace_of(render(capsys, *argv)[1]) == "home-ns"
    env_config = write_kubeconfig(tmp_path / "env-config", "env-ns")
    monkeypatch.setenv("KUBECONFIG", str(env_config))
    assert namespace_of(render(capsys, *argv)[1]) == "env-ns"
    assert namespace_of(render(capsys, "--context", "other", *argv)[1]) == "o"
    flag_config = write_kubeconfig(tmp_path / "flag-config", "flag-ns")
    assert namespace_of(render(capsys, "--kubeconfig", str(flag_config), *argv)[1]) == "flag-ns"
    settings = tmp_path / "s.yaml"
    settings.write_text("namespace: from-file\n")
    assert namespace_of(render(capsys, "--settings", str(settings), *argv)[1]) == "from-file"
    assert namespace_of(render(capsys, "-n", "flag", "--settings", str(settings), *argv)[1]) == (
        "flag"
    )
    # A context without a namespace means default.
    write_kubeconfig(env_config)
    assert namespace_of(render(capsys, *argv)[1]) == "default"


def test_render_named_kubeconfig_or_context_must_exist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, no_cluster: Path
) -> None:
    code, out, err = render(
        capsys, "--kubeconfig", str(tmp_path / "absent"), "--image", "i", "--", "a"
    )
    assert (code, out) == (2, "")
    assert err.startswith("k8s-step-operator render: error: kubeconfig_path: ")
    assert err.rstrip().endswith("(set --kubeconfig or KUBECONFIG)")
    config = write_kubeconfig(tmp_path / "config")
    code, _, err = render(
        capsys, "--kubeconfig", str(config), "--context", "nope", "--image", "i", "--", "a"
    )
    assert code == 2
    assert "kubernetes_context: expected a context of" in err and "(c, other)" in err
    assert err.rstrip().endswith("(set --context to one of them)")
    assert len(err.strip().splitlines()) == 1


def test_run_without_kubeconfig_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], no_cluster: Path
) -> None:
    code = main(["run", "--image", "i:1", "--", "true"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(
        "k8s-step-operator run: error: kubeconfig_path: expected a kubeconfig file "
        "($KUBECONFIG or ~/.kube/config)"
    )
    assert err.rstrip().endswith("(set --kubeconfig or KUBECONFIG)")


def test_run_does_not_force_a_namespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no -n and no namespace in the settings, the library takes the context's namespace.
    from k8s_step_operator._operator import KubernetesJobStepOperator

    seen: dict[str, Any] = {}

    def launch(self: KubernetesJobStepOperator, info: Any, command: Any, env: Any) -> None:
        seen["namespace"] = self.config.namespace
        seen["kubeconfig"] = self.config.kubeconfig_path
        seen["context"] = self.config.kubernetes_context
        seen["incluster"] = self.config.incluster

    monkeypatch.setattr(KubernetesJobStepOperator, "launch", launch)
    config = write_kubeconfig(tmp_path / "config", "team-a")
    argv = ["run", "--kubeconfig", str(config), "--context", "other", "--image", "i", "--", "a"]
    assert main(argv) == 0
    assert seen == {
        "namespace": None,
        "kubeconfig": str(config),
        "context": "other",
        "incluster": False,
    }
    assert main([*argv[:1], "-n", "ml", *argv[1:]]) == 0
    assert seen["namespace"] == "ml"
    capsys.readouterr()


def parse_run(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--image", "i", *argv, "--", "a"])


def test_run_flags_reach_the_settings_mapping() -> None:
    args = parse_run(
        "--on-sigterm", "detach", "--pending-timeout", "30", "--no-logs",
        "--image-pull-timeout", "60",
    )  # fmt: skip
    assert run_settings(args, {"image": "i"}) == {
        "image": "i",
        "on_sigterm": "detach",
        "pending_timeout": 30.0,
        "image_pull_backoff_timeout": 60.0,
        "stream_logs": False,
    }
    assert run_settings(parse_run("--on-sigterm", "delete"), {})["on_sigterm"] == "delete"
    # Not given: the setting's own default applies (the key is left out).
    assert run_settings(parse_run(), {}) == {}
    with pytest.raises(SystemExit):
        parse_run("--on-sigterm", "ignore")
    with pytest.raises(SystemExit):
        parse_run("-v", "-q")


def test_every_step_error_class_has_a_documented_code() -> None:
    documented = " ".join(meaning for _, meaning in EXIT_CODES)
    classes = [StepError, ApiError, ConfigurationError]
    subclasses = {c for base in classes for c in base.__subclasses__()}
    for cls in subclasses | {OOMKilledError, NameCollisionError}:
        if cls in (StepCancelledError, TooManyRequestsError, ServerUnavailableError):
            continue  # never reaches the command line as such / covered by ApiError
        if issubclass(cls, ApiError) and cls is not ApiError:
            continue  # every ApiError exits 125, documented as one
        if issubclass(cls, ConfigurationError) and cls is not ConfigurationError:
            continue  # bad input of any kind exits 2, documented as ConfigurationError
        assert f"`{cls.__name__}`" in documented, cls


def test_exit_codes_are_in_run_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    readme = (ROOT / "README.md").read_text()
    for code, meaning in EXIT_CODES:
        assert f"| {code} | {meaning} |" in readme, code
        assert f"{code} {' '.join(meaning.replace('`', '').split())}" in help_text, code


def test_signals_exit_as_shells_do() -> None:
    assert exit_code(_Terminated(signal.SIGHUP)) == 129
    assert exit_code(_Terminated(signal.SIGTERM)) == 143


# -- one-line errors ---------------------------------------------------------------------------


def test_unreachable_server_is_one_line_with_what_to_do() -> None:
    error = ServerUnavailableError(
        "MaxRetryError: HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
        "with url: /apis/batch/v1/namespaces/ml/jobs (Caused by NewConnectionError('<urllib3."
        "connection.HTTPSConnection object at 0x7f>: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))",
        reason="ConnectionError",
        operation="create Job ml/j",
    )
    text = _describe_api(error, "https://127.0.0.1:1")
    assert text == (
        "cannot reach the API server https://127.0.0.1:1: Connection refused (create Job ml/j); "
        "check that the cluster is up and that --kubeconfig / --context point to it"
    )
    forbidden = ForbiddenError(
        'jobs.batch is forbidden: User "x" cannot create resource "jobs"',
        status=403,
        reason="Forbidden",
        operation="create Job ml/j",
    )
    assert _describe_api(forbidden).endswith(
        "(`k8s-step-operator doctor` names the missing permission)"
    )
    missing = NotFoundError(
        'namespaces "nope" not found', status=404, operation="create Job nope/j"
    )
    assert _describe_api(missing).endswith(
        "(the namespace does not exist: kubectl create namespace nope, or pick another with -n)"
    )
