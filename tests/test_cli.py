"""The entry points' shared error handling (`labelmatch.cli`): the user's errors end a command
with one log line and exit status 1, and the commands other than training do not import it."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from PIL import Image

from labelmatch.cli import ConfigError, cli_errors
from labelmatch.data.errors import DataError
from labelmatch.method.errors import NonFiniteLossError
from labelmatch.scaling import ScalingError
from tests.conftest import REPO

log = logging.getLogger("labelmatch.test_cli")


def missing_mandatory_value() -> Exception:
    try:
        return OmegaConf.create({"data": {"root": "???"}}).data.root
    except Exception as error:  # omegaconf's MissingMandatoryValue, with its full_key
        return error


@pytest.mark.parametrize(
    "error, line",
    [
        (DataError("a.json: no images"), "a.json: no images"),
        (ConfigError("method.init_from is not set"), "method.init_from is not set"),
        (FileNotFoundError("x.ckpt: no such file"), "x.ckpt: no such file"),
        (NonFiniteLossError(7, {"loss": float("nan")}), "non-finite loss at step 7 (loss=nan)"),
        (ScalingError("optim.reference_batch is not set"), "optim.reference_batch is not set"),
        (missing_mandatory_value(), "data.root is not set: give it on the command line"),
    ],
)
def test_a_users_error_is_one_log_line_and_exit_status_1(error, line, caplog) -> None:
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        with cli_errors(log):
            raise error
    assert exit_.value.code == 1
    [record] = caplog.records
    assert record.getMessage().startswith(line)
    assert "\n" not in record.getMessage()


def test_sigterm_exits_with_128_plus_sigterm_and_other_errors_keep_their_traceback(caplog):
    with pytest.raises(SystemExit) as exit_, cli_errors(log):
        raise SIGTERMException()
    assert exit_.value.code == 128 + signal.SIGTERM
    with pytest.raises(KeyError), cli_errors(log):  # a bug is not the user's to fix: traceback
        raise KeyError("bug")
    assert not caplog.records


def test_a_users_error_raised_while_hydra_builds_an_object_is_one_line_too(caplog) -> None:
    """Hydra wraps what a `_target_` raises (missing backbone weights, a bad callback option)
    in its multi-line InstantiationException; the user's error inside it is reported alone."""
    from hydra.utils import instantiate

    target = {"_target_": "labelmatch.models.faster_rcnn.build_frcnn_r50_fpn", "num_classes": 2,
              "backbone_weights": "/nowhere/resnet50.pth"}  # fmt: skip
    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.ERROR):
        with cli_errors(log):
            instantiate(target)
    assert exit_.value.code == 1
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith("ResNet-50 backbone weights not found at '/nowhere/resnet50.pth'")
    assert "model.backbone_weights=null" in message and "\n" not in message
    # anything else Hydra wraps keeps its traceback
    with pytest.raises(Exception, match="Error locating target"), cli_errors(log):
        instantiate({"_target_": "labelmatch.no_such_builder"})


class CommandOwnError(RuntimeError):
    pass


def test_a_command_adds_its_own_errors(caplog) -> None:
    with pytest.raises(SystemExit) as exit_, cli_errors(log, CommandOwnError):
        raise CommandOwnError("onnx and pytorch disagree")
    assert exit_.value.code == 1
    assert caplog.records[0].getMessage() == "onnx and pytorch disagree"


def _error_lines(command: str, overrides: list[str], cwd) -> list[str]:
    """The ERROR lines of `python -m labelmatch.<command>`, which must exit 1 without a
    traceback."""
    result = subprocess.run(
        [sys.executable, "-m", f"labelmatch.{command}", *overrides],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    return [line for line in output.splitlines() if "ERROR" in line]


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_each_entry_point_reports_a_missing_checkpoint_in_one_line(command, tmp_path) -> None:
    overrides = [f"checkpoint={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}"]
    if command == "predict":
        overrides += [f"images={tmp_path}", f"out={tmp_path / 'out'}"]
    [line] = _error_lines(command, overrides, REPO)
    assert "missing.ckpt" in line


def test_predict_without_out_says_so_in_one_line(tmp_path) -> None:
    """predict's run folder is out=; without it Hydra failed on the interpolation, before the
    command could name the missing key (a 100-line traceback until 2026-12-05)."""
    overrides = [f"checkpoint={tmp_path / 'missing.ckpt'}", f"images={tmp_path}"]
    [line] = _error_lines("predict", overrides, tmp_path)
    assert line.endswith("out is not set: give it on the command line (out=...)")
    # out=null too: Hydra's run folder fell back on a missing out=, not on a null one.
    [line] = _error_lines("predict", [*overrides, "out=null"], tmp_path)
    assert line.endswith("out=null: predict writes its images and detections to out=DIR")


def test_predict_into_its_images_folder_is_refused_in_one_line(tmp_path) -> None:
    """Each drawing is out/<stem>.png: with out= the images= folder, predict overwrote the PNG
    images it read (until 2026-12-06); refused before any model is loaded."""
    image = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(image)
    before = image.read_bytes()
    overrides = [
        f"checkpoint={tmp_path / 'missing.ckpt'}",
        f"images={tmp_path}",
        f"out={tmp_path}/.",
    ]
    [line] = _error_lines("predict", overrides, tmp_path)
    assert "is the images= folder: its drawings would overwrite PNG images" in line
    assert image.read_bytes() == before


def test_predict_evaluate_and_export_do_not_import_training() -> None:
    code = (
        "import sys, labelmatch.predict, labelmatch.evaluate, labelmatch.export; "
        "print(sorted(m for m in sys.modules if m == 'labelmatch.run' "
        "or m.startswith('labelmatch.callbacks')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
