"""DVC stage `check`: validate the whole `params.yaml` before any other stage runs.

Each stage validates only the sections it reads (so that it depends on its own code only); this
stage validates everything, every stage's cross-checks included, and refuses keys that no stage
reads (`dvc exp run -S +bogus=1`) and a GPU this machine lacks (`train.device: cuda`; the stages
using it refuse it too, before any work: this stage may be restored from DVC's run-cache). It
reruns whenever params.yaml or the params code changes, in a second; the other stages depend on
its output, which never changes, for order only. Being
the one stage that runs on every experiment, it also cleans up after killed stages: their
temporaries, and their MLflow runs left RUNNING.
"""

from imcap.atomic import atomic_path, prepare_outputs
from imcap.devices import pick_device
from imcap.params import load_params
from imcap.paths import PARAMS_CHECKED
from imcap.tracking import end_killed_runs

CHECKED = "params.yaml is valid (written by the check stage; always these bytes)\n"


def main() -> None:
    params = load_params()
    pick_device(params.features.device, "features.device")  # a GPU this machine lacks
    pick_device(params.train.device, "train.device")
    prepare_outputs(PARAMS_CHECKED)
    end_killed_runs(params.mlflow)
    with atomic_path(PARAMS_CHECKED) as tmp:
        tmp.write_text(CHECKED)


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("check", main)
