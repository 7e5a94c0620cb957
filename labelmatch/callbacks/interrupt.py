"""Save the run when it is stopped: by SIGTERM (a scheduler's pre-emption), by Ctrl-C, by a
non-finite loss, or by an unreadable image met during training.

In one process Lightning turns SIGTERM into a `SIGTERMException` once the running training
step is complete, or, inside a validation, after the running validation batch (that validation
is then not finished, and the resumed run does not repeat it). With several processes (below)
the stop comes at the end of the first training step that ends after the signal, after that
step's validation if one is due, run to its end: the ranks' validation shares can differ by a
batch, so a stop inside it would leave one rank in the predictions' gather. Then Lightning
calls `on_exception` of every callback: that is where `last.ckpt` is written, from the state
after a whole training step, so `ckpt_path=.../last.ckpt` resumes it. SIGINT is routed
through the same path (the first Ctrl-C finishes the step and saves; a second one stops at
once). A non-finite loss stops every rank at the same step, before the optimiser step: its
state is saved separately (`nonfinite-step<N>.ckpt`) for inspection, leaving `last.ckpt` as it
was.

Under DDP, Lightning's SIGTERM handler broadcasts from inside the handler, i.e. in the middle of
whatever collective the rank was in, and forwards the signal to the other ranks. When every
rank is signalled (SLURM's pre-emption and time limit, `kill` of the process group, Ctrl-C in
a terminal) the ranks then issued different collectives: 6 of 11 such stops of a 2-process CPU
run hung or failed, without saving (2026-12-04). So with several processes this callback
replaces that handler (and SIGINT's): a signal only records itself; at the end of every step
all ranks agree by one all-reduce (max) and, if any rank was signalled, raise Lightning's stop
flag together, which then stops them after the same step as in one process.

A job runner's handler of SIGUSR2 (submitit's, under `hydra/launcher=slurm`: SLURM sends it
before the time limit and on pre-emption; the handler requeues the job and exits) is taken over
the same way: the signal stops the run after the step, the state is saved, and then the
runner's handler runs, so the requeued job (`ckpt_path=auto`) continues from this step instead
of the last periodic save.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from labelmatch.data.errors import DataError
from labelmatch.method.errors import NonFiniteLossError

log = logging.getLogger(__name__)


class SaveOnInterrupt(L.Callback):
    """Args:
    dirpath: the checkpoint folder (`last.ckpt`, `nonfinite-step<N>.ckpt`).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.signal: int | None = None  # the signal that stopped the run, if any
        # The handlers this callback replaced, by signal (put back at teardown).
        self._replaced: dict[int, Any] = {}
        self._several_processes = False
        self._stop_agreed = False  # several processes: the ranks have agreed to stop
        self._runner_signalled = False  # this process received the job runner's SIGUSR2

    # ---- Ctrl-C, and the job runner's signal, behave like SIGTERM ----------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has installed its SIGTERM handler by now (Trainer._run, before the loop;
        # not on Windows, where Ctrl-C keeps Lightning's KeyboardInterrupt handling).
        sigterm_handled = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        if not (sigterm_handled and _is_main_thread()):
            return
        self._several_processes = trainer.world_size > 1
        # Several processes: SIGTERM's handler too (Lightning's broadcasts: module docstring).
        signals = [signal.SIGINT, signal.SIGTERM] if self._several_processes else [signal.SIGINT]
        if callable(signal.getsignal(signal.SIGUSR2)):  # not SIG_DFL / SIG_IGN: a job runner
            signals.append(signal.SIGUSR2)
        for signum in signals:
            self._replaced[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        """Remember the signal, nothing else: no collective, no logging (a handler may interrupt
        a logging call holding its lock). In one process SIGTERM's handler, Lightning's, then
        raises its stop flag; with several the ranks agree at the end of the step."""
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once
            previous = self._replaced[signal.SIGINT] or signal.default_int_handler
            signal.signal(signal.SIGINT, previous)
        self._runner_signalled |= signum == signal.SIGUSR2
        self.signal = self.signal or signum
        if not self._several_processes:
            signal.raise_signal(signal.SIGTERM)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self._several_processes:
            return
        # Every rank, at the same point of every step: did any rank get a signal?
        signalled = torch.tensor([self.signal or 0], device=pl_module.device)
        signalled = int(trainer.strategy.reduce(signalled, reduce_op="max").item())
        if signalled:
            self.signal = self.signal or signalled
            self._stop_agreed = True
            # Lightning's own flag, on every rank at once: it raises SIGTERMException at the
            # end of this step (after its validation: see on_validation_start).
            trainer._signal_connector.received_sigterm = True

    # The flag is lowered while a validation due at the stop step runs, so that Lightning does
    # not stop it after its first batch on one rank and after the last on another.
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_agreed:
            trainer._signal_connector.received_sigterm = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_agreed:
            trainer._signal_connector.received_sigterm = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._replaced.items():
            if signal.getsignal(signum) == self._record and _is_main_thread():
                signal.signal(signum, previous)
        self._replaced = {}

    # ---- saving -----------------------------------------------------------------------------
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = self.signal or signal.SIGTERM
            path = self._save(trainer, "last.ckpt")
            log.warning(
                "stopped by %s at step %d: state saved to %s (resume with ckpt_path=%s)",
                signal.Signals(self.signal).name,
                trainer.global_step,
                path,
                path,
            )
            if self._runner_signalled and signal.SIGUSR2 in self._replaced:
                runner_handler = self._replaced.pop(signal.SIGUSR2)
                # The runner's handler requeues the job and exits (submitit: on the first
                # task; the others return and exit as after SIGTERM): flush the logs first.
                log.warning("handing SIGUSR2 to the job runner's handler (it may requeue the job)")
                for logger in trainer.loggers:
                    logger.finalize("failed")
                signal.signal(signal.SIGUSR2, runner_handler)
                runner_handler(signal.SIGUSR2, None)
        elif isinstance(exception, NonFiniteLossError):
            path = self._save(trainer, f"nonfinite-step{exception.step}.ckpt")
            log.error("the state before the non-finite step is saved in %s for inspection", path)
        elif isinstance(exception, DataError) and trainer.world_size == 1:
            # Raised while fetching a batch, i.e. between two complete steps. (Under DDP the
            # other ranks wait in a collective, so saving, which synchronises, would hang.)
            path = self._save(trainer, "last.ckpt")
            log.warning("bad input at step %d: state saved to %s", trainer.global_step, path)

    def _save(self, trainer: L.Trainer, name: str) -> Path:
        path = self.dirpath / name
        trainer.save_checkpoint(path, weights_only=False)
        return path


def _is_main_thread() -> bool:
    # Signal handlers can only be installed from the main thread.
    return threading.current_thread() is threading.main_thread()
