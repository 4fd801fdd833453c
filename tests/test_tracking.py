import mlflow
import pytest

from imcap.tracking import mlflow_run, tracking_uri


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "happy-exp")
    return tmp_path


def test_train_and_evaluate_share_one_run_in_the_repo_root_store(repo):
    with mlflow_run(True, "imcap-test", "train") as tracker:
        tracker.log_params({"attention": "I", "train.epochs": 2})
        tracker.log_metrics({"val_bleu4": 10.0}, step=1)
        tracker.log_metrics({"val_bleu4": 12.0}, step=2)
        artifact = repo / "samples.csv"
        artifact.write_text("image,caption\n")
        tracker.log_artifact(artifact)
    with mlflow_run(True, "imcap-test", "evaluate", resume_run_id=tracker.run_id) as again:
        again.log_metrics({"test_greedy_bleu4": 9.5})
    assert again.run_id == tracker.run_id
    assert (repo / "mlflow.db").exists()
    assert tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"

    client = mlflow.MlflowClient(tracking_uri())
    run = client.get_run(tracker.run_id)
    assert run.data.params == {"attention": "I", "train.epochs": "2"}
    assert run.data.metrics["test_greedy_bleu4"] == 9.5
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_bleu4")] == [10, 12]
    assert run.data.tags["dvc_exp_name"] == "happy-exp"
    assert run.data.tags["imcap.train"] == run.data.tags["imcap.evaluate"] == "logged"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert artifacts == ["samples.csv"]
    assert str(repo / "mlruns") in run.info.artifact_uri


def test_missing_run_to_resume_starts_a_new_one(repo):
    with mlflow_run(True, "imcap-test", "evaluate", resume_run_id="0" * 32) as tracker:
        tracker.log_metrics({"x": 1.0})
    assert tracker.run_id != "0" * 32


def test_disabled_tracking_logs_nothing(repo):
    with mlflow_run(False, "imcap-test", "train") as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"b": 2.0})
    assert tracker.run_id is None
    assert not (repo / "mlflow.db").exists()
