import re

from hypothesis import given, settings
from hypothesis import strategies as st

from k8s_step_operator import job_name, same_step
from k8s_step_operator._job.naming import label_value

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

names = st.text(min_size=1, max_size=300)


@given(run_id=names, step=names)
@settings(max_examples=500)
def test_job_name_is_a_valid_short_dns_label(run_id: str, step: str) -> None:
    name = job_name(run_id, step)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name


@given(run_id=names, step=names)
def test_job_name_is_deterministic(run_id: str, step: str) -> None:
    assert job_name(run_id, step) == job_name(str(run_id), str(step))


@given(a=st.tuples(names, names), b=st.tuples(names, names))
@settings(max_examples=500)
def test_different_steps_never_share_a_name(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a != b:
        assert job_name(*a) != job_name(*b)


def test_separator_ambiguity_does_not_collide() -> None:
    assert job_name("a-b", "c") != job_name("a", "b-c")
    assert job_name("run", "train") != job_name("run", "Train")
    assert job_name("r", "日本") != job_name("r", "中文")


def test_name_keeps_a_readable_slug() -> None:
    name = job_name("run-1", "Train Model!")
    assert name.startswith("train-model-")
    assert job_name("run-1", "日本語").startswith("step-")
    assert len(job_name("r", "x" * 500)) == 63


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_label_value_is_always_valid_and_stable(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value
    assert label_value(text) == value


def test_label_value_keeps_valid_values_and_separates_others() -> None:
    assert label_value("run-1") == "run-1"
    assert label_value("") == ""
    assert label_value("a b") != label_value("a_b")
    assert label_value("a b") != label_value("a/b")


def test_same_step_reads_the_raw_names() -> None:
    job = {
        "metadata": {
            "annotations": {
                "k8s-step-operator.io/run-id": "run/1 ü",
                "k8s-step-operator.io/step-name": "Train Model",
            }
        }
    }
    assert same_step(job, "run/1 ü", "Train Model")
    assert not same_step(job, "run/1 ü", "Train-Model")
    assert not same_step(job, "run/2", "Train Model")
    assert not same_step({"metadata": {}}, "run/1 ü", "Train Model")
    assert not same_step({}, "", "")


def test_same_step_accepts_client_objects() -> None:
    from kubernetes.client import V1Job, V1ObjectMeta

    job = V1Job(
        metadata=V1ObjectMeta(
            annotations={
                "k8s-step-operator.io/run-id": "r",
                "k8s-step-operator.io/step-name": "s",
            }
        )
    )
    assert same_step(job, "r", "s")  # type: ignore[arg-type]
    assert not same_step(job, "r", "t")  # type: ignore[arg-type]


def test_uuid_ids_name_the_same_job_as_their_text() -> None:
    import uuid

    run = uuid.uuid4()
    assert job_name(run, "s") == job_name(str(run), "s")  # type: ignore[arg-type]
    job = {
        "metadata": {
            "annotations": {
                "k8s-step-operator.io/run-id": str(run),
                "k8s-step-operator.io/step-name": "s",
            }
        }
    }
    assert same_step(job, run, "s")  # type: ignore[arg-type]


# --- one Job per attempt: (run id, step name, step run id) ---

ids = st.text(min_size=1, max_size=100)


@given(run_id=names, step=names, attempt=ids)
@settings(max_examples=300)
def test_attempt_names_are_valid_and_deterministic(run_id: str, step: str, attempt: str) -> None:
    name = job_name(run_id, step, attempt)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name
    assert job_name(run_id, step, attempt) == name


@given(run_id=names, step=names, a=ids, b=ids)
@settings(max_examples=300)
def test_a_retried_step_gets_a_new_job(run_id: str, step: str, a: str, b: str) -> None:
    if a != b:
        assert job_name(run_id, step, a) != job_name(run_id, step, b)


@given(run_id=names, step=names, attempt=ids)
def test_attempt_names_differ_from_the_name_without_attempt(
    run_id: str, step: str, attempt: str
) -> None:
    assert job_name(run_id, step, attempt) != job_name(run_id, step)


@given(a=st.tuples(names, names, ids), b=st.tuples(names, names, ids))
@settings(max_examples=300)
def test_different_attempts_never_share_a_name(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    if a != b:
        assert job_name(*a) != job_name(*b)


def test_two_argument_form_is_the_old_name() -> None:
    # The name releases with one Job per (run, step) gave; code that computes it keeps working.
    assert job_name("run-1", "train") == "train-" + _old_digest("run-1", "train")
    assert job_name("run-1", "train", None) == job_name("run-1", "train")
    assert job_name("run-1", "train", "sr") != job_name("run-1", "train")
    assert job_name("run-1", "Train Model!", "sr").startswith("train-model-")


def _old_digest(run_id: str, step: str) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps([run_id, step]).encode()).hexdigest()[:16]


def test_uuid_step_run_ids_name_the_same_job_as_their_text() -> None:
    import uuid

    attempt = uuid.uuid4()
    assert job_name("r", "s", attempt) == job_name("r", "s", str(attempt))  # type: ignore[arg-type]


def _job(run_id: str, step: str, attempt: str | None) -> dict[str, object]:
    annotations = {
        "k8s-step-operator.io/run-id": run_id,
        "k8s-step-operator.io/step-name": step,
    }
    if attempt is not None:
        annotations["k8s-step-operator.io/step-run-id"] = attempt
    return {"metadata": {"annotations": annotations}}


def test_same_step_with_a_step_run_id_requires_the_same_attempt() -> None:
    job = _job("r", "train", "attempt-1")
    # A restarted caller of the same attempt reattaches.
    assert same_step(job, "r", "train", "attempt-1")
    # A retry (a new step run) does not adopt the earlier attempt's Job.
    assert not same_step(job, "r", "train", "attempt-2")
    assert not same_step(job, "r", "other", "attempt-1")
    assert not same_step(job, "r2", "train", "attempt-1")
    # Without a step run id: any attempt of the step, as before.
    assert same_step(job, "r", "train")
    # A Job that does not say which attempt it runs is not that attempt's.
    assert not same_step(_job("r", "train", None), "r", "train", "attempt-1")
    assert same_step(_job("r", "train", None), "r", "train")


def test_same_step_with_a_step_run_id_on_client_objects() -> None:
    import uuid

    from kubernetes.client import V1Job, V1ObjectMeta

    attempt = uuid.uuid4()
    job = V1Job(
        metadata=V1ObjectMeta(
            annotations={
                "k8s-step-operator.io/run-id": "r",
                "k8s-step-operator.io/step-name": "s",
                "k8s-step-operator.io/step-run-id": str(attempt),
            }
        )
    )
    assert same_step(job, "r", "s", attempt)  # type: ignore[arg-type]
    assert not same_step(job, "r", "s", uuid.uuid4())  # type: ignore[arg-type]
