"""Speed benchmark (not a test): what a LabelMatch step costs next to its floor, on the digits.

    python benchmarks/speed.py [--out outputs/bench.json] [--docs docs/benchmarks.md]
                               [--init-from CKPT] [--steps 20] [--profile PATH] [hydra overrides]

One process, `model=frcnn_tiny` on the default experiment's data (experiment=digits), the
default loader workers. The student first trains supervised for `--pretrain-steps` steps, by
default the recipe's burn-in (`method.burn_in_steps`), so that the teacher is the one a run's
first ACT refresh sees (a shorter-trained one over-detects: after 100 steps it kept the 100-box
cap at the refresh's 0.001 score floor, against 45 after 500); or it starts from `--init-from`,
a checkpoint of this project. Then every figure is a median over `--steps` repeats
after `--warmup` repeats, on batches fetched beforehand (data loading is measured on its own):

- supervised_step_s: a burn-in training step (labeled batch B: forward, backward, SGD step);
- labelmatch_step_s: a semi-supervised step (labeled B + unlabeled B, the module's
  training_step, backward, SGD step, EMA update);
- teacher_infer_s: the teacher's pass on the B weak views (detections and the features kept);
- student_unlabeled_step_s: the student's forward + backward on the B strong views with the
  teacher's reliable and uncertain boxes as ordinary targets (no second SGD step);
- floor_ratio = (supervised + student_unlabeled + teacher_infer) / supervised; step_ratio =
  labelmatch / supervised: what the method adds beyond the floor is step_ratio - floor_ratio;
- act_img_per_s: the ACT refresh pass (the callback's loader and teacher pass, score floor
  0.001, thresholds); eval_img_per_s: plain inference of the same model on the val loader;
  act_to_eval: the median over repeats of the two rates' ratio, each repeat timing both;
- loader_img_per_s: labeled images + paired weak/strong unlabeled views per second from the
  DataModule's two training loaders; train_img_per_s = (B_l + B_u) / labelmatch_step_s;
- act_batch_s: one batch of the refresh pass (loading under the test transform, the teacher,
  score floor 0.001); labelmatch_loop_step_s: a LabelMatch step as a run takes it, its batches
  drawn from the training loaders (workers running) rather than fetched beforehand; the two are
  timed in the same rounds;
- act_overhead_*: a refresh of R images every K steps as a share of training time, at the
  default recipe (K = method.act.interval, R = min(method.act.subset, unlabeled images)) and at
  the paper's K = 1000, R = 10000: per round, ceil(R / batch) act batches against K loop steps
  of the same round, then the median over rounds (a loader's start-up, once per refresh, is
  left out; act_img_per_s includes it); online ACT's per-step queue update as a share of a
  step;
- peak_rss_mib: peak resident memory of this process, which builds what `make run` builds
  (data, student, teacher, loaders) and runs every kind of step it runs.
The section between `<!-- speed:begin -->` and `<!-- speed:end -->` of `--docs` is replaced.

`--profile PATH` writes where a LabelMatch step's time goes, over `--steps` steps on the same
batches (see `profile_steps`): not a figure of the table, a reading of it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import math
import os
import pstats
import resource
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from benchmark_report import fitted_datamodule, machine_description, replace_section, repo_config
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import labelmatch
from labelmatch.callbacks.act_refresh import concatenate, teacher_detections
from labelmatch.callbacks.channels_last import to_channels_last
from labelmatch.data.geometry import weak_to_strong
from labelmatch.method.act import (
    ClassPrior,
    ScoreQueue,
    act_thresholds,
    online_act_thresholds,
    scores_by_class,
    top_scores_per_image,
)
from labelmatch.method.ema import ema_update
from labelmatch.method.module import LabelMatchModule, detector_state
from labelmatch.method.pseudo_labels import split_by_thresholds
from labelmatch.method.teacher import teacher_forward

BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
PAPER_INTERVAL, PAPER_SUBSET = 1000, 10000  # the official K and R (docs/method.md §1)
# Files of Python's warnings machinery, whose frames sit between a warning and its handler.
WARNINGS_MACHINERY = ("warnings.py", "_py_warnings.py")

# target name -> (measured value, bound, verdict); filled by `targets`.
Targets = dict[str, tuple[float, float, bool]]


# ----------------------------------------------------------------------------------- set-up
def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The default experiment with model=frcnn_tiny unless the overrides pick a model."""
    model = [] if any(o.startswith("model=") for o in overrides) else ["model=frcnn_tiny"]
    return repo_config([*model, *overrides])


def build(cfg: DictConfig) -> tuple[Any, LabelMatchModule]:
    datamodule = fitted_datamodule(cfg.data)
    detector = instantiate(cfg.model, num_classes=datamodule.num_classes)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    method["name"] = "labelmatch"
    module = LabelMatchModule(
        detector,
        method=method,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        class_names=list(datamodule.class_names),
        category_ids=list(datamodule.category_map.category_ids),
        val_json=str(datamodule.splits.val_json),
    )
    return datamodule, module


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} (load {load_average()[0]})", flush=True)


def seconds(fn: Callable[..., object], *args: Any) -> float:
    synchronize()
    started = time.perf_counter()
    fn(*args)
    synchronize()
    return time.perf_counter() - started


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_trainer(args: argparse.Namespace) -> L.Trainer:
    """A Trainer the module can be attached to outside `fit`: its strategy (the module's
    non-finite-loss check), its precision plugin (autocast for bf16-mixed / 16-mixed, as
    `trainer.precision` gives a run) and no logging (`barebones`)."""
    return L.Trainer(
        barebones=True,
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        precision=args.precision,
    )


# ------------------------------------------------------------------------------ measurements
def loader_throughput(datamodule, steps: int, warmup: int) -> tuple[float, list, list]:
    """Images per second of the two training loaders together (one labeled and one unlabeled
    batch per step), and the batches drawn (reused for the step timings)."""
    loaders = datamodule.train_dataloader()
    labeled_iter, unlabeled_iter = iter(loaders["labeled"]), iter(loaders["unlabeled"])
    labeled, unlabeled, images = [], [], 0
    for _ in range(warmup):  # starts the workers and fills their prefetch queues
        labeled.append(next(labeled_iter))
        unlabeled.append(next(unlabeled_iter))
    started = time.perf_counter()
    for _ in range(steps):
        labeled.append(next(labeled_iter))
        unlabeled.append(next(unlabeled_iter))
        images += len(labeled[-1]["images"]) + len(unlabeled[-1]["weak"])
    elapsed = time.perf_counter() - started
    del labeled_iter, unlabeled_iter  # ends the workers
    return images / elapsed, labeled, unlabeled


def set_act_thresholds(module: LabelMatchModule, datamodule, num_images: int) -> None:
    loader = datamodule.reference_dataloader(num_images, step=0)
    labels, scores = concatenate(teacher_detections(module, loader))
    prior = datamodule.labeled_class_prior
    reliable, uncertain = act_thresholds(
        scores_by_class(labels, scores, datamodule.num_classes),
        num_images,
        prior,
        alpha=module.method["alpha"],
        min_threshold=module.method["act"]["min_threshold"],
    )
    module.set_thresholds(reliable, uncertain)


def eval_pass(module: LabelMatchModule, loader) -> int:
    images = 0
    with torch.inference_mode():
        for batch in loader:
            batch = module.transfer_batch_to_device(batch, module.device, 0)
            module.teacher(batch["images"])
            images += len(batch["images"])
    return images


def pseudo_targets(module: LabelMatchModule, unlabeled: dict) -> list[dict[str, torch.Tensor]]:
    """The teacher's reliable + uncertain boxes moved to the strong views, as plain targets."""
    out = teacher_forward(module.teacher, unlabeled["weak"])
    targets = []
    for det, weak_m, strong_m, strong in zip(
        out.detections, unlabeled["weak_matrix"], unlabeled["strong_matrix"], unlabeled["strong"]
    ):
        pseudo = split_by_thresholds(
            det["boxes"],
            det["scores"],
            det["labels"],
            module.reliable_thresholds,
            module.uncertain_thresholds,
        ).map(weak_to_strong(weak_m, strong_m), tuple(strong.shape[-2:]))
        targets.append(
            {
                # float32: autocast leaves bf16 boxes, which torchvision's target check refuses
                "boxes": torch.cat([pseudo.reliable_boxes, pseudo.uncertain_boxes]).float(),
                "labels": torch.cat([pseudo.reliable_labels, pseudo.uncertain_labels]),
            }
        )
    return targets


def measure(args: argparse.Namespace, cfg: DictConfig) -> dict[str, Any]:
    """Every figure of the benchmark (see the module docstring), under the precision's autocast
    (fp16's gradient scaling costs one multiply per step and is left out)."""
    with bare_trainer(args).precision_plugin.forward_context():
        return measure_in_precision(args, cfg)


def measure_in_precision(args: argparse.Namespace, cfg: DictConfig) -> dict[str, Any]:
    datamodule, module = build(cfg)
    device = torch.device(args.device)
    module.trainer = bare_trainer(args)
    module.to(device).train()
    if cfg.channels_last is True or (cfg.channels_last == "auto" and device.type == "cuda"):
        for detector in (module.student, module.teacher):
            to_channels_last(detector)  # as the run's ChannelsLast callback does
    optimization = module.configure_optimizers()
    optimizer, scheduler = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    rounds = args.warmup + args.steps
    results: dict[str, Any] = {}
    progress("data loading")
    results["loader_img_per_s"], labeled, unlabeled = loader_throughput(datamodule, rounds, 3)
    labeled = [module.transfer_batch_to_device(b, device, 0) for b in labeled[-rounds:]]
    unlabeled = [module.transfer_batch_to_device(b, device, 0) for b in unlabeled[-rounds:]]

    def sgd_step(output: dict) -> None:
        output["loss"].backward()
        optimizer.step()
        scheduler.step()  # the warm-up: pre-training must reach the recipe's learning rate
        optimizer.zero_grad(set_to_none=True)

    def supervised_step(i: int) -> None:
        module.burn_in_steps = 10**9  # training_step stays in the supervised phase
        sgd_step(module.training_step({"labeled": labeled[i % rounds]}, i))

    if args.init_from:
        state = torch.load(args.init_from, map_location="cpu", weights_only=False)
        module.student.load_state_dict(detector_state(state["state_dict"], "teacher"))
    for i in range(0 if args.init_from else args.pretrain_steps):
        if i % 100 == 0:
            progress(f"supervised pre-training, step {i}/{args.pretrain_steps}")
        supervised_step(i)
    module.burn_in_steps = 0
    module.start_semi_supervised()  # teacher := student
    num_reference = min(cfg.method.act.subset, len(datamodule.unlabeled_dataset))
    set_act_thresholds(module, datamodule, num_reference)
    progress("ACT refresh and plain inference")
    results.update(inference_rates(module, datamodule, args))
    progress("training steps")
    results.update(
        step_times(module, datamodule, labeled, unlabeled, supervised_step, sgd_step, args)
    )
    progress("ACT refresh next to training steps from the loaders")
    results.update(refresh_overhead(module, datamodule, sgd_step, args))
    results.update(peak_memory())  # before the profile, whose own buffers would count
    if args.profile is not None:
        progress(f"profile of {args.steps} LabelMatch steps")
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(profile_steps(module, labeled, unlabeled, sgd_step, args))

    batch_images = cfg.data.labeled_batch_size + cfg.data.unlabeled_batch_size
    results["train_img_per_s"] = batch_images / results["labelmatch_step_s"]
    results["floor_ratio"] = (
        results["supervised_step_s"]
        + results["student_unlabeled_step_s"]
        + results["teacher_infer_s"]
    ) / results["supervised_step_s"]
    results["step_ratio"] = results["labelmatch_step_s"] / results["supervised_step_s"]

    results["act_interval"], results["act_subset"] = int(cfg.method.act.interval), num_reference
    results["act_overhead_online"] = results["online_act_update_s"] / results["labelmatch_step_s"]
    return results


def inference_rates(module: LabelMatchModule, datamodule, args) -> dict[str, float]:
    """act_img_per_s and eval_img_per_s, whole passes (loader start included), alternated so
    that load from other processes hits both alike; medians over the repeats."""
    num_images = min(args.inference_images, len(datamodule.unlabeled_dataset))
    val_loader = datamodule.val_dataloader()
    # The timed refreshes use fewer images than a run's; the run's thresholds are put back after.
    thresholds = [t.clone() for t in (module.reliable_thresholds, module.uncertain_thresholds)]
    act, plain = [], []
    for _ in range(args.inference_repeats):
        act.append(num_images / seconds(set_act_thresholds, module, datamodule, num_images))
        plain.append(len(datamodule.val_dataset) / seconds(eval_pass, module, val_loader))
    module.set_thresholds(*thresholds)
    return {
        "act_img_per_s": statistics.median(act),
        "eval_img_per_s": statistics.median(plain),
        "act_to_eval": statistics.median(a / p for a, p in zip(act, plain)),
    }


def semi_supervised_step(module: LabelMatchModule, batch: dict, i: int, sgd_step) -> dict:
    """One LabelMatch step as the run does it: training_step, backward + SGD, EMA update.
    Returns the step's output (what callbacks receive)."""
    module.burn_in_steps = 0
    output = module.training_step(batch, i)
    sgd_step(output)
    ema_update(module.teacher, module.student, module.method["ema_momentum"])
    return output


def step_times(module, datamodule, labeled, unlabeled, supervised_step, sgd_step, args) -> dict:
    """Median seconds of each kind of step. Every round times each kind once on the same batch,
    so that load from other processes hits all kinds alike; the first `warmup` rounds are not
    counted."""
    queue, prior = full_online_queue(module, datamodule)
    targets = {}

    def student_unlabeled(i: int) -> None:
        losses = module.student(unlabeled[i]["strong"], targets[i])
        sum(losses.values()).backward()
        module.student.zero_grad(set_to_none=True)

    last_output: dict = {}

    def labelmatch_step(i: int) -> None:
        last_output.update(
            semi_supervised_step(
                module, {"labeled": labeled[i], "unlabeled": unlabeled[i]}, i, sgd_step
            )
        )

    def online_update() -> None:  # what online ACT's callback does after each step
        detections = last_output["teacher_detections"]
        queue.push(top_scores_per_image(detections, prior.num_classes, queue.top_k))
        online_act_thresholds(queue, prior, module.method["alpha"])

    times: dict[str, list[float]] = {}
    for i in range(args.warmup + args.steps):
        targets[i] = pseudo_targets(module, unlabeled[i])
        measured = {
            "supervised_step_s": seconds(supervised_step, i),
            "teacher_infer_s": seconds(teacher_forward, module.teacher, unlabeled[i]["weak"]),
            "student_unlabeled_step_s": seconds(student_unlabeled, i),
            "labelmatch_step_s": seconds(labelmatch_step, i),
            "online_act_update_s": seconds(online_update),
            "ema_update_s": seconds(ema_update, module.teacher, module.student, 0.996),
        }
        if i >= args.warmup:
            for key, value in measured.items():
                times.setdefault(key, []).append(value)
    results = {key: statistics.median(values) for key, values in times.items()}
    boxes = [len(t["boxes"]) for batch in targets.values() for t in batch]
    results["pseudo_boxes_per_image"] = round(statistics.mean(boxes), 2)
    return results


def profile_steps(module, labeled, unlabeled, sgd_step, args) -> str:
    """Where `--steps` LabelMatch steps (the timed batches, SGD and EMA) spend their time, as text:

    - the functions of labelmatch and torchvision by cumulative time (cProfile; it slows every
      Python call alike, so the shares matter, not the seconds; on CUDA the device runs behind
      the host, and its time lands in the function where the host waits for it);
    - on any device, the aten operators the steps run and those that would make the host wait
      for a GPU, by source (`OperatorCensus`): counts, the same on every machine of one kind;
    - on CUDA, the steps' wall time next to the time the device was busy (its kernels and
      copies, summed: torch.profiler): the rest of the time it waited for the host;
    - on CUDA, each line of this project that made the host wait for the device (a `.item()`,
      `nonzero`, a boolean mask, a copy to the CPU: torch.cuda.set_sync_debug_mode), counted.
    """

    def steps() -> None:
        for i in range(args.steps):
            batch = {"labeled": labeled[i], "unlabeled": unlabeled[i]}
            semi_supervised_step(module, batch, i, sgd_step)
        synchronize()

    steps()  # warm: allocator, cuDNN's choices
    profiler = cProfile.Profile()
    profiler.runcall(steps)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
    stats.print_stats(r"labelmatch|torchvision", 40)
    report = [f"# {args.steps} LabelMatch steps on {args.device}, precision {args.precision}", ""]
    report += ["## Functions by cumulative time (cProfile)", text.getvalue().strip(), ""]
    census = OperatorCensus()
    with census:
        steps()
    report += [
        "## Operators (aten calls, forward and backward)",
        *census_report(census, args.steps),
    ]
    report += [""]
    if args.device.startswith("cuda"):
        wall = seconds(steps)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            steps()
        busy_us = sum(event.self_device_time_total for event in prof.key_averages())
        report += [
            "## Host and device",
            f"wall per step {1e3 * wall / args.steps:.1f} ms; device busy per step (kernels and "
            f"copies) {busy_us / 1e3 / args.steps:.1f} ms",
            "",
            "## Lines that wait for the device, per step",
            *(f"{n / args.steps:6.1f}  {line}" for line, n in synchronizing_lines(steps)),
        ]
    return "\n".join(report) + "\n"


# Operators that make the host wait for a GPU: they read a value, or a size, the device computes.
# A boolean mask used as an index (read or write) counts its rows the same way (`waits_for_device`).
READS_DEVICE = {
    "_local_scalar_dense",  # .item(), int(), float(), bool() of a tensor
    "nonzero",
    "masked_select",
    "is_nonzero",
    "equal",
    "bincount",  # sizes its output from the largest value
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "_linalg_check_errors",  # torch.linalg.inv and others check their result on the host
    "allclose",
    "nms",  # torchvision's: the suppression runs on the host from a mask copied there
}


def waits_for_device(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Whether this aten call would make the host wait for a GPU (READS_DEVICE, a boolean-mask
    index or index write, `repeat_interleave` without `output_size`). Copies to or from a GPU
    are not seen on a CPU; the GPU's own count (`synchronizing_lines`) sees them."""
    name = func._schema.name.split("::")[-1]
    if name in READS_DEVICE:
        return True
    if name == "repeat_interleave":
        return kwargs.get("output_size") is None and (len(args) < 4 or args[3] is None)
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        return any(
            isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)
            for index in args[1]
            if index is not None
        )
    return False


class OperatorCensus:
    """Counts the aten operators run inside it (`with census:`), on any device, by where they come
    from: the line of this project's package that called them, else "torchvision" (torchvision's
    code, called from anywhere), else "other" (the autograd engine's backward, the optimiser,
    torch itself). `waits` counts those that would make the host wait for a GPU
    (`waits_for_device`), and `Tensor.tolist`, which on a GPU copies to the host and waits; other
    copies from a GPU are not seen on a CPU (`synchronizing_lines` sees them on a GPU).
    On a GPU each operator is at least one kernel launch the host pays for, and each wait a stall:
    counts, not times, which a CPU can take for a GPU. They are the same on every machine of one
    kind of device; a CPU's and a GPU's can differ where a library picks its path by device
    (torchvision's batched NMS does), and `.tolist()` counts as a wait on a CPU too."""

    def __init__(self) -> None:
        self.operators: Counter[str] = Counter()
        self.waits: Counter[str] = Counter()
        self._package = os.path.dirname(labelmatch.__file__) + os.sep
        self._torchvision = os.path.dirname(torchvision.__file__) + os.sep
        self._modes = (_ToListCounter(self), _OperatorCounter(self))

    def __enter__(self) -> OperatorCensus:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc_info)

    def source(self) -> str:
        """Where the operator being counted comes from (the caller of the mode's handler)."""
        frame = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(self._package):
                return f"labelmatch/{filename[len(self._package) :]}:{frame.f_lineno}"
            if filename.startswith(self._torchvision):
                return "torchvision"
            frame = frame.f_back
        return "other"


class _OperatorCounter(TorchDispatchMode):
    def __init__(self, census: OperatorCensus) -> None:
        super().__init__()
        self.census = census

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        where = self.census.source()
        self.census.operators[where] += 1
        if waits_for_device(func, args, kwargs):
            self.census.waits[where] += 1
        return func(*args, **kwargs)


class _ToListCounter(TorchFunctionMode):
    def __init__(self, census: OperatorCensus) -> None:
        super().__init__()
        self.census = census

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.census.waits[self.census.source()] += 1
        return func(*args, **(kwargs or {}))


def census_report(census: OperatorCensus, steps: int) -> list[str]:
    """The census per step as text: totals by source, this project's operators by file and its
    waits by line."""

    def by_source(counts: Counter[str]) -> str:
        ours = sum(n for where, n in counts.items() if where.startswith("labelmatch/"))
        return (
            f"{sum(counts.values()) / steps:.1f} (this project {ours / steps:.1f}, torchvision "
            f"{counts['torchvision'] / steps:.1f}, other {counts['other'] / steps:.1f})"
        )

    files: Counter[str] = Counter()
    for where, n in census.operators.items():
        if where.startswith("labelmatch/"):
            files[where.rsplit(":", 1)[0]] += n
    return [
        f"operators per step {by_source(census.operators)}",
        f"of which would wait for a GPU {by_source(census.waits)}",
        "",
        "### This project's operators per step, by file",
        *(f"{n / steps:7.1f}  {where}" for where, n in files.most_common()),
        "",
        "### This project's lines that would wait for a GPU, per step",
        *(
            f"{n / steps:6.1f}  {where}"
            for where, n in census.waits.most_common()
            if where.startswith("labelmatch/")
        ),
    ]


def synchronizing_lines(fn: Callable[[], object]) -> list[tuple[str, int]]:
    """Runs fn with CUDA's sync debug mode on; each synchronizing call is attributed to the
    innermost frame in this project's package (else the innermost frame) and counted. Returns
    ("file:line in function", count), most frequent first."""
    package = os.path.dirname(labelmatch.__file__)
    counts: Counter[str] = Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing" not in str(message):
            return
        stack = [
            frame
            for frame in traceback.extract_stack()[:-1]
            if os.path.basename(frame.filename) not in WARNINGS_MACHINERY
        ]
        ours = [frame for frame in stack if frame.filename.startswith(package + os.sep)]
        if not stack:
            counts["(no Python frame)"] += 1
            return
        frame = (ours or stack)[-1]
        where = (
            os.path.relpath(frame.filename, os.path.dirname(package)) if ours else frame.filename
        )
        counts[f"{where}:{frame.lineno} in {frame.name}"] += 1

    mode = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    return counts.most_common()


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process and of its (ended) loader workers, and on CUDA the
    peak of PyTorch's allocations on the GPU, in MiB."""
    peaks = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loader_worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if torch.cuda.is_available():
        peaks["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def refresh_overhead(module: LabelMatchModule, datamodule, sgd_step, args) -> dict[str, float]:
    """The ACT refresh's share of training time, its two sides timed in the same rounds.

    Each round times one batch of the refresh pass (from the refresh's own loader, restarted
    untimed when a pass ends; loading, teacher, score floor 0.001) and one LabelMatch step as a
    run takes it: its labeled and unlabeled batches drawn from the DataModule's training loaders
    (workers running, as in a run), then the step, SGD and EMA. Per round, ceil(R / batch)
    refresh batches against K steps; the median over rounds (a loader's start-up, once per
    refresh, is left out; act_img_per_s includes it)."""
    live = {name: iter(loader) for name, loader in datamodule.train_dataloader().items()}
    num_reference = min(module.method["act"]["subset"], len(datamodule.unlabeled_dataset))
    reference: Iterator = iter(())

    def next_reference_batch(i: int) -> dict:
        nonlocal reference
        batch = next(reference, None)
        if batch is None:
            reference = iter(datamodule.reference_dataloader(num_reference, step=i))
            batch = next(reference)
        return batch

    def act_batch(batch: dict) -> None:
        teacher_detections(module, [batch])

    def loop_step(i: int) -> None:
        batch = {"labeled": next(live["labeled"]), "unlabeled": next(live["unlabeled"])}
        semi_supervised_step(
            module, module.transfer_batch_to_device(batch, module.device, 0), i, sgd_step
        )

    times: dict[str, list[float]] = {"act_batch_s": [], "labelmatch_loop_step_s": []}
    for i in range(args.warmup + args.steps):
        measured = (seconds(act_batch, next_reference_batch(i)), seconds(loop_step, i))
        if i >= args.warmup:
            times["act_batch_s"].append(measured[0])
            times["labelmatch_loop_step_s"].append(measured[1])
    live.clear()  # ends the workers
    results = {key: statistics.median(values) for key, values in times.items()}
    batch = datamodule.val_batch_size
    for name, interval, subset in (
        ("default", module.method["act"]["interval"], num_reference),
        ("paper", PAPER_INTERVAL, PAPER_SUBSET),
    ):
        shares = [
            refresh_share(math.ceil(subset / batch) * act, interval * step)
            for act, step in zip(times["act_batch_s"], times["labelmatch_loop_step_s"])
        ]
        results[f"act_overhead_{name}"] = statistics.median(shares)
    return results


def refresh_share(refresh_s: float, training_s: float) -> float:
    """A refresh's share of the time of the K steps it is amortised over, refresh included."""
    return refresh_s / (training_s + refresh_s)


def full_online_queue(module: LabelMatchModule, datamodule) -> tuple[ScoreQueue, ClassPrior]:
    """Online ACT's queue at its configured size, filled (as in a long run) by repeating the
    teacher's per-image top scores on the unlabeled images."""
    act = module.method["act"]
    num_classes = datamodule.num_classes
    queue = ScoreQueue(act["queue_images"], num_classes, act["queue_top_k"])
    loader = datamodule.reference_dataloader(len(datamodule.unlabeled_dataset), step=1)
    rows = top_scores_per_image(teacher_detections(module, loader), num_classes, queue.top_k)
    while queue.num_images < queue.capacity:
        queue.push(rows)
    return queue, datamodule.labeled_class_prior


# ------------------------------------------------------------------------------------ report
def targets(r: dict[str, Any], rss_limit_mib: float) -> Targets:
    """The issue's targets: name -> (value, bound, passed)."""
    return {
        "step_ratio <= 1.10 x floor_ratio": (
            r["step_ratio"],
            1.10 * r["floor_ratio"],
            r["step_ratio"] <= 1.10 * r["floor_ratio"],
        ),
        "act_img_per_s >= 0.9 x eval_img_per_s (ratio per repeat)": (
            r["act_to_eval"],
            0.9,
            r["act_to_eval"] >= 0.9,
        ),
        "loader_img_per_s >= 3 x train_img_per_s": (
            r["loader_img_per_s"],
            3 * r["train_img_per_s"],
            r["loader_img_per_s"] >= 3 * r["train_img_per_s"],
        ),
        "ACT refresh <= 5 % of training (default K, R)": (
            100 * r["act_overhead_default"],
            5.0,
            r["act_overhead_default"] <= 0.05,
        ),
        "peak RSS <= 4 GiB": (r["peak_rss_mib"], rss_limit_mib, r["peak_rss_mib"] <= rss_limit_mib),
    }


ROWS: list[tuple[str, str]] = [
    ("supervised_step_s", "{:.3f}"),
    ("labelmatch_step_s", "{:.3f}"),
    ("teacher_infer_s", "{:.3f}"),
    ("student_unlabeled_step_s", "{:.3f}"),
    ("ema_update_s", "{:.4f}"),
    ("floor_ratio", "{:.3f}"),
    ("step_ratio", "{:.3f}"),
    ("act_img_per_s", "{:.1f}"),
    ("act_batch_s", "{:.3f}"),
    ("labelmatch_loop_step_s", "{:.3f}"),
    ("eval_img_per_s", "{:.1f}"),
    ("act_to_eval", "{:.3f}"),
    ("loader_img_per_s", "{:.1f}"),
    ("train_img_per_s", "{:.1f}"),
    ("act_overhead_default", "{:.2%}"),
    ("act_overhead_paper", "{:.2%}"),
    ("online_act_update_s", "{:.4f}"),
    ("act_overhead_online", "{:.2%}"),
    ("pseudo_boxes_per_image", "{:.2f}"),
    ("peak_rss_mib", "{:.0f}"),
    ("peak_gpu_mib", "{:.0f}"),
]


def markdown(results: dict[str, Any], checks: Targets) -> str:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| `{key}` | {fmt.format(results[key])} |" for key, fmt in ROWS if key in results]
    lines += ["", "| target | measured | bound | verdict |", "|---|---|---|---|"]
    for name, (value, bound, passed) in checks.items():
        verdict = "**pass**" if passed else "**short**"
        lines.append(f"| {name} | {value:.3f} | {bound:.3f} | {verdict} |")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the speed section of `path` (between the markers), or add it."""
    replace_section(path, BEGIN, END, section)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench.json"))
    parser.add_argument("--docs", type=Path, default=None, help="update this file's section")
    parser.add_argument("--init-from", type=Path, default=None, help="a checkpoint of this project")
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="default: method.burn_in_steps"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed repeats per figure")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repeats before those")
    parser.add_argument("--inference-images", type=int, default=300)
    parser.add_argument("--inference-repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"]
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="write where a step's time goes (text)"
    )
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    return parser.parse_args([a for a in argv if a not in overrides]), overrides


def main(argv: Sequence[str]) -> None:
    args, overrides = parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")  # no Trainer in this process
    cfg = compose_config(overrides)
    if args.pretrain_steps is None:
        args.pretrain_steps = int(cfg.method.burn_in_steps)
    load_before = load_average()
    started = time.monotonic()
    results = measure(args, cfg)
    checks = targets(results, rss_limit_mib=4 * 1024)
    results["targets"] = {
        name: {"value": v, "bound": b, "verdict": "pass" if ok else "short"}
        for name, (v, b, ok) in checks.items()
    }
    command = shlex.join(["python", os.path.relpath(sys.argv[0]), *argv])
    results["meta"] = {
        "command": command,
        "machine": f"{machine_description()}; {torch.get_num_threads()} intra-op threads",
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "overrides": overrides,
        "batch": [cfg.data.labeled_batch_size, cfg.data.unlabeled_batch_size],
        "num_workers": cfg.data.num_workers,
        "device": args.device,
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "precision": args.precision,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "steps": args.steps,
        "warmup": args.warmup,
        "init": str(args.init_from) if args.init_from else f"{args.pretrain_steps} steps",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results, checks)
    print(table)
    print(
        f"wrote {args.out}; load average {load_before} -> {results['meta']['load_average_after']}"
    )
    if args.docs is not None:
        write_section(args.docs, docs_section(results, table))
        print(f"wrote {args.docs}")


def docs_section(results: dict[str, Any], table: str) -> str:
    meta = results["meta"]
    return "\n".join(
        [
            "## Speed: a LabelMatch step next to its floor (`make bench`)",
            "",
            f"Command: `{meta['command']}`",
            "",
            f"- Machine: {meta['machine']}",
            f"- Date: {meta['date']}; {meta['minutes']} min; load average (1/5/15 min) "
            f"{meta['load_average_before']} before, {meta['load_average_after']} after",
            f"- Setting: {meta['model']} on {meta['device']}, precision {meta['precision']}, "
            f"OMP_WAIT_POLICY={meta['omp_wait_policy']}; experiment=digits data "
            f"{' '.join(meta['overrides'])} (batch {meta['batch'][0]} "
            f"labeled + {meta['batch'][1]} unlabeled, {meta['num_workers']} loader workers); "
            f"model from {meta['init']}; medians of {meta['steps']} repeats after "
            f"{meta['warmup']}",
            "",
            table,
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
