"""Lightning data module: labeled, unlabeled, validation and ACT-reference loaders.

Batch formats (what the collate functions produce, lists because image sizes differ):
  labeled / val / reference batch:
    {"images": [float32 [3, H, W] in 0..1],
     "targets": [dict(boxes=float32 [N, 4] view-frame XYXY, labels=int64 [N], image_id=int,
                      matrix=[3, 3] original -> view, orig_size=(h, w))]}
  unlabeled batch:
    {"weak": [float32 [3, H, W]], "strong": [float32 [3, H', W']],
     "weak_matrix": [[3, 3]], "strong_matrix": [[3, 3]],
     "targets": [dict(boxes=ORIGINAL-frame XYXY [N, 4], weak_boxes=the same in the weak
                      view's frame [N, 4], labels=int64 [N], image_id=int)]}
    (ground truth of the unlabeled images, for pseudo-label statistics only; [0, 4] if none)
With `skip_invalid=True` an unreadable image is dropped (see `CocoDetection`), so a batch
may hold fewer images than its batch size, in rare cases none.

Training loaders stream endlessly (`InfiniteSampler`), so training is counted in steps; the
trainer must run with `use_distributed_sampler=False`: each loader shards itself by the
torch.distributed rank, including validation (each rank evaluates a disjoint share). Each
training sample is augmented under its own seed (`SeededDraws`), and a loader built by a
resumed trainer starts after the draws its steps consumed: a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Protocol

import lightning
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from labelmatch.data.categories import CategoryMap
from labelmatch.data.class_prior import ClassPrior, class_prior_from_counts
from labelmatch.data.coco import CocoDetection, CocoSplits, load_coco_json, report_table
from labelmatch.data.errors import DataError
from labelmatch.data.samplers import (
    STREAM_SEEDING,
    InfiniteSampler,
    SeededDraws,
    Stream,
    stream_seed,
)
from labelmatch.data.scales import resolve_scales
from labelmatch.data.shared_images import warn_of_shared_images
from labelmatch.data.transforms import (
    PAPER_RESIZE,
    PAPER_WEAK_RESIZE,
    LabeledTransform,
    ResizeRule,
    TestTransform,
    UnlabeledViews,
    resize_rule,
)
from labelmatch.distributed import distributed_rank_and_world_size

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, as DataLoader's own check reads)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """Worker processes per training loader: `requested`, at most one per available core (more
    only compete with the model's own threads, and DataLoader warns about them)."""
    workers = min(requested, available_cpus())
    if workers < requested and rank_zero_only.rank == 0:
        logger.info("data.num_workers=%d: %d CPU cores available, using %d", requested,
                    available_cpus(), workers)  # fmt: skip
    return workers


class ResolvableSplits(Protocol):
    """Anything that yields the four dataset paths, e.g. `DigitsSplits` or `CocoSplits`."""

    def resolve(self) -> CocoSplits: ...


def collate_labeled(samples: Sequence[tuple[torch.Tensor, dict] | None]) -> dict[str, list]:
    """Labeled, validation and reference batches; drops samples skipped as unreadable."""
    kept = [sample for sample in samples if sample is not None]
    return {"images": [image for image, _ in kept], "targets": [target for _, target in kept]}


def collate_unlabeled(samples: Sequence[dict | None]) -> dict[str, list]:
    """Unlabeled batches of `UnlabeledViews` outputs; drops samples skipped as unreadable."""
    kept = [sample for sample in samples if sample is not None]
    batch: dict[str, list] = {
        key: [sample[key] for sample in kept]
        for key in ("weak", "strong", "weak_matrix", "strong_matrix")
    }
    batch["targets"] = [sample["target"] for sample in kept]
    return batch


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT and SIGTERM to the main process, which finishes its step and
    saves the run (`SaveOnInterrupt`); a worker killed by them would make the DataLoader abort
    the main process first. The workers end when the main process ends its loaders (or exits)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@rank_zero_only
def _not_an_exact_resume(why: str) -> None:
    logger.warning(
        "%s: the resumed run draws other images and augmentations from here than the original "
        "would have: it is not an exact resume.",
        why[0].upper() + why[1:],
    )


def _same_categories(reference: dict, reference_file: Any, other: dict, other_file: Any) -> None:
    """DataError naming both files when their category lists (ids and names) differ."""

    def as_pairs(coco: dict) -> list[tuple[Any, Any]]:
        return sorted((c.get("id"), c.get("name")) for c in coco["categories"])

    if as_pairs(reference) != as_pairs(other):
        only_reference = sorted(set(as_pairs(reference)) - set(as_pairs(other)))
        only_other = sorted(set(as_pairs(other)) - set(as_pairs(reference)))
        raise DataError(
            f"category lists differ between {reference_file} and {other_file}: "
            f"(id, name) only in the first: {only_reference}, only in the second: {only_other}"
        )


def derived_view_sizes(splits: CocoSplits | ResolvableSplits, sizes: dict[str, Any]) -> dict:
    """`sizes` (the five scale keys) with every None filled from the sizes of the labeled images
    (`labelmatch.data.scales.resolve_scales`). Reads the labeled json only when a key is None,
    resolving the splits first (which generates an embedded dataset)."""
    if all(value is not None for value in sizes.values()):
        return sizes
    labeled_json = splits.resolve().labeled_json
    images = load_coco_json(labeled_json).get("images", [])
    return resolve_scales(sizes, images, str(labeled_json))


class DetectionDataModule(lightning.LightningDataModule):
    """Labeled + unlabeled + validation COCO-format splits for semi-supervised detection.

    `splits` is a `CocoSplits` or anything with `resolve() -> CocoSplits` (e.g. `DigitsSplits`).
    `train_scales`, `weak_scales` and `strong_scales` size the labeled, weak and strong views:
    each a resize rule (`labelmatch.data.transforms`) or a list of short sides in pixels (long
    side capped at `max_size`); the test view has short side `test_scale`, long side at most
    `max_size`. Defaults are the official paper-table rules (docs/method.md §5).
    A size given as None is derived from the labeled images (`labelmatch.data.scales`).
    `labeled_photometric=False` drops the labeled colour jitter (the official supervised
    baseline). `pin_memory=None` pins batches when CUDA is
    available; training and validation workers persist across epochs unless
    `persistent_workers=False` (the ACT reference loader never persists: one per refresh).
    `inference_workers` serve the test-transform loaders (validation, ACT reference); None
    means `num_workers` when CUDA is available and 0 (the main process) otherwise.
    """

    def __init__(
        self,
        splits: CocoSplits | ResolvableSplits,
        labeled_batch_size: int = 8,
        unlabeled_batch_size: int = 8,
        val_batch_size: int = 8,
        reference_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        inference_workers: int | None = None,
        use_unlabeled: bool = True,
        train_scales: ResizeRule | Sequence[int] = PAPER_RESIZE,
        weak_scales: ResizeRule | Sequence[int] = PAPER_WEAK_RESIZE,
        strong_scales: ResizeRule | Sequence[int] = PAPER_RESIZE,
        test_scale: int = 800,
        max_size: int = 1333,
        flip_prob: float = 0.5,
        labeled_photometric: bool = True,
        skip_invalid: bool = False,
        exif_orientation: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.unresolved_splits = splits
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = unlabeled_batch_size
        self.val_batch_size = val_batch_size
        # ACT's reference pass; None: val_batch_size. (Batched images are padded to the
        # largest, which changes a smaller image's detections: the batch sizes are the
        # official ones on the paper's data, conf/data/loader/paper.yaml.)
        self.reference_batch_size = reference_batch_size or val_batch_size
        self.num_workers = loader_workers(num_workers)
        # None: pinned host memory exactly when a CUDA device is there to copy batches to.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        # On a CPU-only machine the detector's threads already use every core, and a test view
        # (decode + one resize) costs about 1 ms: worker processes only add their start-up and
        # an inter-process copy per image. Measured on the digits (2 cores): the ACT refresh
        # pass runs at 83 images/s in the main process against 69 with 2 workers
        # (docs/benchmarks.md). Training views (strong augmentation) keep `num_workers`.
        if inference_workers is None:
            inference_workers = self.num_workers if torch.cuda.is_available() else 0
        self.inference_workers = inference_workers
        self.use_unlabeled = use_unlabeled
        # The short sides the views are drawn at (a list, an int or a resize rule), as given or,
        # where None, derived from the labeled images (`data=coco`'s default).
        self.view_sizes = derived_view_sizes(
            splits,
            {"train_scales": train_scales, "weak_scales": weak_scales,
             "strong_scales": strong_scales, "test_scale": test_scale, "max_size": max_size},
        )  # fmt: skip
        sizes = self.view_sizes
        self.labeled_transform = LabeledTransform(
            resize_rule(sizes["train_scales"], sizes["max_size"]), flip_prob, labeled_photometric
        )
        self.unlabeled_views = UnlabeledViews(
            resize_rule(sizes["weak_scales"], sizes["max_size"]),
            resize_rule(sizes["strong_scales"], sizes["max_size"]),
            flip_prob,
        )
        self.test_transform = TestTransform(sizes["test_scale"], sizes["max_size"])
        self.skip_invalid = skip_invalid
        self.exif_orientation = exif_orientation
        self.seed = seed
        # The training streams' (global start, step there, draws a step); saved positions.
        self._stream_starts: dict[str, tuple[int, int, int]] = {}
        self._saved_positions: dict[str, int] = {}
        self._state_loaded = False  # load_state_dict ran (a resumed run)
        self.splits: CocoSplits | None = None
        self.category_map: CategoryMap | None = None
        self.labeled_dataset: CocoDetection | None = None
        self.unlabeled_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None
        self.calibration_dataset: CocoDetection | None = None  # CocoSplits.calibration_json

    # ---- setup --------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Runs once per node before `setup`: generates the digits dataset if needed."""
        self.unresolved_splits.resolve()

    def setup(self, stage: str | None = None) -> None:
        """Resolve the splits, build the category map from the labeled file, and the datasets.

        Builds everything once, whatever the stage, so later stages reuse it.
        """
        if self.category_map is not None:
            return
        splits = self.unresolved_splits.resolve()
        labeled_coco = load_coco_json(splits.labeled_json)
        val_coco = load_coco_json(splits.val_json)
        _same_categories(labeled_coco, splits.labeled_json, val_coco, splits.val_json)
        category_map = CategoryMap.from_coco(labeled_coco["categories"])

        def dataset(image_dir: Any, ann_file: Any, coco: dict, transforms: Any) -> CocoDetection:
            return CocoDetection(
                image_dir, ann_file, category_map, transforms, self.skip_invalid, coco=coco,
                exif_orientation=self.exif_orientation,
            )  # fmt: skip

        self.labeled_dataset = dataset(
            splits.image_dir, splits.labeled_json, labeled_coco, self.labeled_transform
        )
        self.val_dataset = dataset(
            splits.val_image_dir, splits.val_json, val_coco, self.test_transform
        )
        for name, data in (("labeled", self.labeled_dataset), ("val", self.val_dataset)):
            if len(data) == 0:
                raise DataError(f"{data.ann_file}: the {name} split has no usable images")
        if self.labeled_dataset.report["boxes"] == 0:
            raise DataError(
                f"{splits.labeled_json}: the labeled split's {len(self.labeled_dataset)} images "
                "have no training box (crowd and rejected boxes are none): there is nothing to "
                "learn detection from; label more images (prepare split --percent or --per-class)"
            )
        if self.use_unlabeled:
            self.unlabeled_dataset = self._unlabeled_dataset(splits, labeled_coco, dataset)
        if splits.calibration_json is not None:
            self.calibration_dataset = self._calibration_dataset(splits, labeled_coco, dataset)
        self.splits, self.category_map = splits, category_map
        if rank_zero_only.rank == 0:  # set from the launcher's env before the process group
            warn_of_shared_images(self.labeled_dataset, self.unlabeled_dataset, self.val_dataset)
            logger.info(
                "data (docs/bad-input.md says what each column counts; ACT's class prior is the "
                "labeled split's `prior boxes`: every annotation, crowd included):\n%s",
                self.report(),
            )

    def report(self) -> str:
        """The splits' validation counts, one row per split (`report_table`)."""
        datasets = {"labeled": self.labeled_dataset, "unlabeled": self.unlabeled_dataset,
                    "val": self.val_dataset, "calibration": self.calibration_dataset}  # fmt: skip
        return report_table({name: d.report for name, d in datasets.items() if d is not None})

    def _calibration_dataset(
        self, splits: CocoSplits, labeled_coco: dict, dataset: Any
    ) -> CocoDetection:
        """The calibration split (`CocoSplits.calibration_json`): annotated like the labeled
        split, none of its images in the labeled or the unlabeled split (calibrating on images
        the teacher trains on, or pseudo-labels, is what the split is there to avoid)."""
        path = splits.calibration_json
        coco = load_coco_json(path)
        _same_categories(labeled_coco, splits.labeled_json, coco, path)
        calibration = dataset(splits.calibration_image_dir, path, coco, self.test_transform)
        if len(calibration) == 0 or calibration.report["boxes"] == 0:
            raise DataError(f"{path}: the calibration split has no usable image with a box")
        for name, split in (
            ("labeled", self.labeled_dataset),
            ("unlabeled", self.unlabeled_dataset),
        ):
            shared = sorted(set(calibration.image_files) & set(split.image_files if split else ()))
            if shared:
                raise DataError(
                    f"{path}: {len(shared)} of its images are {name} training images too (first: "
                    f"{shared[0]}); the calibration split must hold images training never reads"
                )
        return calibration

    def _unlabeled_dataset(
        self, splits: CocoSplits, labeled_coco: dict, dataset: Any
    ) -> CocoDetection:
        if splits.unlabeled_json is None:
            raise DataError(
                "no unlabeled annotation file (data.splits.unlabeled_json), which a "
                "semi-supervised method needs (method=supervised trains without one)"
            )
        coco = load_coco_json(splits.unlabeled_json, require_categories=False)
        if "categories" in coco:  # COCO's image_info_unlabeled2017.json may have none
            _same_categories(labeled_coco, splits.labeled_json, coco, splits.unlabeled_json)
        unlabeled = dataset(
            splits.unlabeled_image_dir, splits.unlabeled_json, coco, self.unlabeled_views
        )
        if len(unlabeled) == 0:
            raise DataError(
                f"{splits.unlabeled_json}: no usable unlabeled images, which a semi-supervised "
                "method needs (method=supervised trains without them)"
            )
        return unlabeled

    def _require_setup(self) -> CategoryMap:
        if self.category_map is None:
            raise RuntimeError("DetectionDataModule.setup() has not run yet")
        return self.category_map

    @property
    def num_classes(self) -> int:
        """C, foreground classes (model labels 1..C)."""
        return self._require_setup().num_classes

    @property
    def class_names(self) -> list[str]:
        """Name of label i + 1 at index i."""
        return self._require_setup().names

    @cached_property
    def labeled_class_prior(self) -> ClassPrior:
        """The labeled split's class prior, computed once for every user (ACT, the pseudo-label
        statistics, the run-health checks, the benchmarks): its annotation counts
        (`prior_counts`: every annotation, crowd / VOC-difficult included, as the official hook
        counts the labeled json) over its images, docs/method.md §2."""
        self._require_setup()
        labeled = self.labeled_dataset
        return class_prior_from_counts(labeled.prior_counts, len(labeled))

    @cached_property
    def calibration_class_prior(self) -> ClassPrior:
        """The known prior of the images the estimated prior calibrates on
        (`calibration_dataloader`): the calibration split's, by the labeled prior's rule, or the
        labeled prior itself without one."""
        self._require_setup()
        calibration = self.calibration_dataset
        if calibration is None:
            return self.labeled_class_prior
        return class_prior_from_counts(calibration.prior_counts, len(calibration))

    @cached_property
    def unlabeled_class_prior(self) -> ClassPrior | None:
        """The unlabeled split's own prior by the same rule (the oracle of `method.act.prior`,
        a reference only); None without an unlabeled split or without annotations in it."""
        self._require_setup()
        unlabeled = self.unlabeled_dataset
        if unlabeled is None or sum(unlabeled.prior_counts) == 0:
            return None
        return class_prior_from_counts(unlabeled.prior_counts, len(unlabeled))

    # ---- loaders ------------------------------------------------------------------------

    def _loader(
        self,
        dataset: CocoDetection | SeededDraws,
        batch_size: int,
        sampler: Any,
        collate: Any,
        role: int,
        persistent: bool = True,
        workers: int | None = None,
    ) -> DataLoader:
        """`workers`: loader processes, `num_workers` unless given."""
        workers = self.num_workers if workers is None else workers
        rank, _ = distributed_rank_and_world_size()
        # Worker RNG seeds differ per seed, rank and loader role (training augmentation does not
        # depend on them: it is seeded per draw, see SeededDraws).
        worker_seed = int(np.random.SeedSequence([self.seed, rank, role]).generate_state(1)[0])
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=persistent and self.persistent_workers and workers > 0,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(worker_seed),
            worker_init_fn=ignore_stop_signals,
        )

    def _consumed_batches(self) -> int:
        """Batches each training loader has already delivered on each rank: 0, or the step a
        trainer resumed from (one batch per loader per step and accumulated micro-step)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.global_step * trainer.accumulate_grad_batches

    # Each stream's global position (the draws all ranks have taken) travels in the checkpoint,
    # so a run resumed on another number of processes goes on from it: recomputed from the step
    # and today's number of processes, it repeated or skipped images.
    def state_dict(self) -> dict[str, Any]:
        step = self.trainer.global_step if self.trainer is not None else 0
        positions = {
            stream: start + (step - start_step) * per_step
            for stream, (start, start_step, per_step) in self._stream_starts.items()
        }
        # How evaluation images are read, for predict and export on a checkpoint that has left
        # its run directory (informational: a resumed run reads its own config).
        evaluation_view = {
            "test_scale": self.view_sizes["test_scale"],
            "max_size": self.view_sizes["max_size"],
            "exif_orientation": self.exif_orientation,
        }
        return {
            "stream_positions": positions,
            "stream_seeding": STREAM_SEEDING,
            "evaluation_view": evaluation_view,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_positions = dict(state_dict.get("stream_positions", {}))
        self._state_loaded = True
        seeding = state_dict.get("stream_seeding", 1)
        if seeding != STREAM_SEEDING:
            _not_an_exact_resume(
                f"the checkpoint's run drew its data streams with stream seeding {seeding}, this "
                f"code draws with seeding {STREAM_SEEDING} (samplers.STREAM_SEEDING)"
            )

    def _infinite_sampler(
        self, stream: Stream, dataset: CocoDetection, batch_size: int
    ) -> InfiniteSampler:
        rank, world_size = distributed_rank_and_world_size()
        name = stream.name.lower()  # "labeled", "unlabeled": the checkpoint's keys
        # Without a saved position (a fresh run, a checkpoint before 2026-12-04): as many
        # processes as now drew batch_size per loader batch since step 0.
        start = self._saved_positions.get(name, self._consumed_batches() * batch_size * world_size)
        step = self.trainer.global_step if self.trainer is not None else 0
        batches_per_step = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        self._stream_starts[name] = (start, step, batches_per_step * batch_size * world_size)
        return InfiniteSampler(
            len(dataset),
            shuffle=True,
            seed=self.seed,
            stream=stream,
            rank=rank,
            world_size=world_size,
            start=start,
        )

    def train_dataloader(self) -> dict[str, DataLoader]:
        """{"labeled": ..., "unlabeled": ...} endless loaders ("unlabeled" only with unlabeled
        data); Lightning combines the dict into a CombinedLoader."""
        self._require_setup()
        resumed = getattr(self.trainer, "ckpt_path", None) is not None
        if resumed and self._consumed_batches() > 0 and not self._state_loaded:
            _not_an_exact_resume(
                "the checkpoint holds no data stream state (one written before 2026-12-04): the "
                "streams go on from the step count, as drawn by as many processes as now, with "
                f"this code's stream seeding {STREAM_SEEDING} (1 before 2026-12-05)"
            )
        loaders = {
            "labeled": self._loader(
                SeededDraws(self.labeled_dataset),
                self.labeled_batch_size,
                self._infinite_sampler(
                    Stream.LABELED, self.labeled_dataset, self.labeled_batch_size
                ),
                collate_labeled,
                role=0,
            )
        }
        if self.use_unlabeled:
            loaders["unlabeled"] = self._loader(
                SeededDraws(self.unlabeled_dataset),
                self.unlabeled_batch_size,
                self._infinite_sampler(
                    Stream.UNLABELED, self.unlabeled_dataset, self.unlabeled_batch_size
                ),
                collate_unlabeled,
                role=1,
            )
        return loaders

    def val_dataloader(self) -> DataLoader:
        """Validation images in file order; under DDP each rank takes a strided share."""
        self._require_setup()
        rank, world_size = distributed_rank_and_world_size()
        if len(self.val_dataset) < world_size:  # a rank without images stops Lightning's loop
            raise DataError(
                f"{self.val_dataset.ann_file}: {len(self.val_dataset)} val images for "
                f"{world_size} processes, each validating a share: give at least {world_size}"
            )
        share = range(rank, len(self.val_dataset), world_size)
        return self._loader(
            self.val_dataset,
            self.val_batch_size,
            share,
            collate_labeled,
            role=2,
            workers=self.inference_workers,
        )

    @property
    def calibration_images(self) -> CocoDetection:
        """The images the estimated prior calibrates the teacher on: the calibration split
        (`CocoSplits.calibration_json`), which training never reads, or else the labeled split,
        which it trains on (docs/method.md §2 "Estimated prior" says what that costs)."""
        self._require_setup()
        calibration = self.calibration_dataset
        return self.labeled_dataset if calibration is None else calibration

    def calibration_dataloader(self, num_images: int, step: int) -> DataLoader:
        """A random subset of `num_images` of `calibration_images` (capped at their number) in
        the reference pass's form (`reference_dataloader`): the estimated prior's calibration
        pass at step `step`, fitted to `calibration_class_prior`."""
        images = self.calibration_images
        return self._reference_subset(images, Stream.REFERENCE_LABELED, num_images, step)

    def reference_dataloader(self, num_images: int, step: int, labeled: bool = False) -> DataLoader:
        """A freshly shuffled random subset of `num_images` unlabeled images (capped at the
        set's size) under the test transform, in the val batch format: the reference set of
        the ACT threshold refresh at training step `step` (docs/method.md §2). The subset is a
        function of the run's seed and `step`, so all ranks draw the same one and each takes a
        disjoint strided share of it. `labeled`: the same from the labeled images instead (the
        estimated prior calibrates the teacher on them, docs/method.md §2)."""
        self._require_setup()
        dataset = self.labeled_dataset if labeled else self.unlabeled_dataset
        if dataset is None:
            raise DataError("reference_dataloader needs unlabeled data (use_unlabeled=False)")
        stream = Stream.REFERENCE_LABELED if labeled else Stream.REFERENCE
        return self._reference_subset(dataset, stream, num_images, step)

    def _reference_subset(
        self, dataset: CocoDetection, stream: Stream, num_images: int, step: int
    ) -> DataLoader:
        """`num_images` of `dataset` drawn by `stream` at `step`, test transform, val format,
        each rank a disjoint strided share."""
        generator = torch.Generator()
        generator.manual_seed(stream_seed(self.seed, stream, step))
        subset = torch.randperm(len(dataset), generator=generator)[:num_images]
        rank, world_size = distributed_rank_and_world_size()
        return self._loader(
            dataset.with_transforms(self.test_transform),
            self.reference_batch_size,
            subset[rank::world_size].tolist(),
            collate_labeled,
            role=3,
            persistent=False,  # a new loader every refresh; do not leave workers behind
            workers=self.inference_workers,
        )
