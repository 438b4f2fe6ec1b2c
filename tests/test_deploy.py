"""deploy/: the Kubeflow TFJob manifest runs the project's command line in every pod, with
replica types that are the TF_CONFIG task types the program reads, and the restart policy that
matches its exit statuses; the Dockerfile copies every package the project installs.

No Kubernetes cluster here: the manifest is read, each pod's command is parsed with the
project's own flags (not run), and each pod's TF_CONFIG is written as the training operator
writes it (every replica type, lower-cased, in the cluster; the pod's own task).
"""

import configparser
import json
import os

import pytest
from absl import flags as absl_flags

import flags as run_flags
from conftest import ROOT
from trainer import distribute

yaml = pytest.importorskip("yaml", reason='PyYAML cannot be imported: pip install ".[test]"')


@pytest.fixture(scope="module")
def tfjob():
    with open(os.path.join(ROOT, "deploy", "tfjob.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture
def flags_restored():
    yield
    absl_flags.FLAGS.unparse_flags()


def _containers(replica_spec):
    return replica_spec["template"]["spec"]["containers"]


def test_every_pod_runs_the_command_line_with_flags_it_accepts(tfjob, flags_restored):
    specs = tfjob["spec"]["tfReplicaSpecs"]
    training_pods = sum(spec["replicas"] for replica_type, spec in specs.items()
                        if replica_type.lower() in distribute.TRAINING_TASKS)
    commands = set()
    for spec in specs.values():
        (container,) = _containers(spec)
        assert container["name"] == "tensorflow"  # The container the operator gives TF_CONFIG.
        assert container["command"] == ["python", "-m", "trainer.main"]
        run_flags.parse(["trainer.main", *container["args"]])  # Raises if refused.
        # One replica per CPU pod: the global batch must divide by the training pods.
        assert run_flags.dataset.BATCH_SIZE.value % training_pods == 0
        assert run_flags.training.MODEL_DIR.value.startswith("/shared/")  # on the shared volume
        commands.add(json.dumps(container["args"]))
    assert len(commands) == 1  # Every task of a cluster gets the same flags.


def test_the_replica_types_are_the_tf_config_tasks_the_program_reads(tfjob, monkeypatch):
    specs = tfjob["spec"]["tfReplicaSpecs"]
    cluster = {replica_type.lower(): [f"{tfjob['metadata']['name']}-{replica_type.lower()}-{i}"
                                      f".default.svc:2222" for i in range(spec["replicas"])]
               for replica_type, spec in specs.items()}
    assert set(cluster) == {*distribute.TRAINING_TASKS, distribute.EVALUATOR_TASK}
    for task_type, addresses in cluster.items():
        for index in range(len(addresses)):
            monkeypatch.setenv("TF_CONFIG", json.dumps({
                "cluster": cluster, "task": {"type": task_type, "index": index},
                "environment": "cloud"}))
            assert distribute.tf_config_cluster()["task"] == {"type": task_type, "index": index}
            assert distribute.is_evaluator_task() == (task_type == distribute.EVALUATOR_TASK)
            assert distribute.cluster_source() == "TF_CONFIG"


def test_pods_restart_after_a_signal_and_not_after_an_error(tfjob):
    # ExitCode: 128 and up (143 after the SIGTERM save) restarts; 1-127 (divergence, bad input)
    # fails the job.
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        assert spec["restartPolicy"] == "ExitCode"
    chief = tfjob["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
    assert chief["terminationGracePeriodSeconds"] >= 60  # time to save after SIGTERM


def test_the_image_holds_every_package_the_project_installs():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    packages = {line.strip().rstrip("*") for line in
                config["options.packages.find"]["include"].split() if line.strip()}
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as f:
        copied = {line.split()[1] for line in f if line.startswith("COPY ")}
    assert packages <= copied, packages - copied
