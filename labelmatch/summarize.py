"""Final metrics of every job of a Hydra sweep, as one table: `python -m labelmatch.summarize DIR`.

Reads each job directory under DIR (any folder with `.hydra/overrides.yaml`): its overrides and
its `results.json`. Prints a markdown table with one row per job (the overrides that differ
between jobs, steps, teacher and student AP x 100) and writes it to `DIR/summary.md` and
`DIR/summary.csv`. When the sweep varies `seed` or `data.splits.fold`, a second table gives
mean ± sample std over them for each setting of the other overrides (`DIR/summary_mean.csv`);
`method.init_from` counts as part of the repetition, not as a setting, when it follows the seed
or fold one to one within each setting (the two-stage recipe: stage 2 of seed S starts from the
baseline of seed S, and no other). A job
without a readable `results.json` (failed or still running) is listed with that status and left
out of the means. Missing values (a supervised job has no teacher) are "—", empty in the CSV; a
mean over fewer runs than its row counts (a NaN left some out) says "(n of N)".
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

# Overrides that repeat one setting (Table 1 averages folds); means are taken over them.
# data.fold: the fold's key in sweeps made before the data splits were nested (issue #15).
REPEAT_KEYS = ("seed", "data.splits.fold", "data.fold")
# Overrides that follow the repetition: in the two-stage recipe each seed's stage 2 starts from
# that seed's stage-1 checkpoint, so the path differs with the seed without being a setting.
PER_REPEAT_KEYS = ("method.init_from",)
# (column, model in results.json, metric key); values are AP x 100.
METRICS = [
    ("teacher mAP", "teacher", "map"),
    ("teacher AP50", "teacher", "map_50"),
    ("teacher AP75", "teacher", "map_75"),
    ("student mAP", "student", "map"),
    ("student AP50", "student", "map_50"),
]


@dataclass
class Job:
    directory: Path  # relative to the sweep directory
    overrides: dict[str, str]
    results: dict[str, Any] | None
    status: str

    def metric(self, model: str, key: str) -> float:
        """AP x 100, NaN when the job has no results or no such model (supervised: no teacher)."""
        value = (self.results or {}).get(model, {}).get(key)
        return math.nan if value is None else 100.0 * value


def setting_text(value: Any) -> str:
    """A setting's value as the tables write it, one text per value whether a job gave it on
    the command line or ran at it (`ran_with`): true / false, null, numbers as Python writes
    them (1e-4 and 0.0001 alike), lists and maps as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """Hydra's overrides.yaml list ("key=value", "+key=value", "~key") -> {key: value}, each
    value read by Hydra's override grammar (`setting_text`); a line it cannot read is split
    at its first "=" as written."""
    parser = OverridesParser.create()
    parsed = {}
    for line in map(str, lines):
        try:
            override = parser.parse_override(line)
        except HydraException:
            key, _, value = line.partition("=")
            parsed[key.lstrip("+~")] = "(deleted)" if key.startswith("~") else value
            continue
        key = override.key_or_group
        parsed[key] = "(deleted)" if override.is_delete() else setting_text(override.value())
    return parsed


def _natural_key(path: Path) -> list:
    """Job folders 0, 1, ..., 10 in numeric, not string, order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def read_results(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(results or None, status): "ok", "no results.json" or "unreadable results.json"."""
    if not path.is_file():
        return None, "no results.json"
    try:
        return json.loads(path.read_text()), "ok"
    except json.JSONDecodeError:
        return None, "unreadable results.json"


def ran_with(job_dir: Path, keys: Iterable[str]) -> dict[str, str]:
    """The values a job ran with for override `keys` it did not give: the config group's
    choice (`.hydra/hydra.yaml`, e.g. method -> labelmatch), else the key's value in its
    `.hydra/config.yaml`; a key neither file has is left out. Each file is read once."""
    keys = list(keys)
    if not keys:
        return {}
    hydra_file, config_file = job_dir / ".hydra" / "hydra.yaml", job_dir / ".hydra" / "config.yaml"
    choices = {}
    if hydra_file.is_file():
        choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices") or {}
    config = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
    values = {}
    for key in keys:
        value = choices.get(key)
        if value is None:
            value = OmegaConf.select(config, key, throw_on_missing=False)
        if value is not None and not OmegaConf.is_config(value):
            values[key] = setting_text(value)
    return values


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under `sweep_dir`; a key that some jobs override and another does not is
    filled in for that one with the value it ran with (`ran_with`), so that a run at the
    default is named in the table, not left blank."""
    jobs = []
    for overrides_file in sweep_dir.rglob(".hydra/overrides.yaml"):
        directory = overrides_file.parent.parent
        results, status = read_results(directory / "results.json")
        overrides = parse_overrides(OmegaConf.to_container(OmegaConf.load(overrides_file)))
        jobs.append(Job(directory.relative_to(sweep_dir), overrides, results, status))
    keys = dict.fromkeys(key for job in jobs for key in job.overrides)
    for job in jobs:
        not_given = [key for key in keys if key not in job.overrides]
        job.overrides.update(ran_with(sweep_dir / job.directory, not_given))
    return sorted(jobs, key=lambda job: _natural_key(job.directory))


def varying_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value is not the same in every job, in first-seen order."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    return [k for k in keys if len({job.overrides.get(k, "") for job in jobs}) > 1]


def format_value(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def per_job_rows(jobs: Sequence[Job], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["job", *keys, "status", "steps", *(name for name, _, _ in METRICS)]
    rows = []
    for job in jobs:
        steps = str(job.results["steps"]) if job.results is not None else ""
        metrics = [format_value(job.metric(model, key)) for _, model, key in METRICS]
        settings = [job.overrides.get(k, "") for k in keys]
        rows.append([str(job.directory), *settings, job.status, steps, *metrics])
    return header, rows


def mean_and_std(values: Sequence[float]) -> str:
    """ "mean ± sample std" of the non-NaN values (just the mean for one value), with "(n of
    N)" when NaN left some runs out, so the runs column is not read as the count behind it."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return "—"
    if len(kept) == 1:
        text = f"{kept[0]:.2f}"
    else:
        text = f"{statistics.mean(kept):.2f} ± {statistics.stdev(kept):.2f}"
    return text if len(kept) == len(values) else f"{text} ({len(kept)} of {len(values)})"


def group_jobs(
    jobs: Sequence[Job], setting_keys: Sequence[str]
) -> dict[tuple[str, ...], list[Job]]:
    """Finished jobs by their values of `setting_keys`."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        if job.results is not None:
            groups.setdefault(tuple(job.overrides.get(k, "") for k in setting_keys), []).append(job)
    return groups


def follows_repeats(
    jobs: Sequence[Job], key: str, repeats: Sequence[str], settings: Sequence[str]
) -> bool:
    """Whether, over the finished jobs that set `key`, within each setting of the `settings`
    overrides each seed / fold has one value of it and no two seeds / folds share one (a
    one-to-one map: each seed's own checkpoint; two experiments each with their own baselines
    are two such maps)."""
    values: dict[tuple[tuple[str, ...], tuple[str, ...]], set[str]] = {}
    for job in jobs:
        if job.results is not None and key in job.overrides:
            setting = tuple(job.overrides.get(k, "") for k in settings)
            repeat = tuple(job.overrides.get(k, "") for k in repeats)
            values.setdefault((setting, repeat), set()).add(job.overrides[key])
    if not all(len(v) == 1 for v in values.values()):
        return False
    per_setting: dict[tuple[str, ...], list[str]] = {}
    for (setting, _), (value,) in values.items():
        per_setting.setdefault(setting, []).append(value)
    return all(len(set(v)) == len(v) for v in per_setting.values())


def mean_rows(jobs: Sequence[Job], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One row per setting of the non-repeat overrides: mean ± std over seeds/folds. A
    PER_REPEAT_KEYS override that follows the seeds / folds one to one is part of the
    repetition; otherwise (two checkpoints for one seed, one for two) it is a setting."""
    repeats = [k for k in keys if k in REPEAT_KEYS]
    others = [k for k in keys if k not in REPEAT_KEYS and k not in PER_REPEAT_KEYS]
    setting_keys = [
        k
        for k in keys
        if k not in REPEAT_KEYS
        and not (k in PER_REPEAT_KEYS and follows_repeats(jobs, k, repeats, others))
    ]
    groups = group_jobs(jobs, setting_keys)
    header = [*setting_keys, f"runs (over {', '.join(repeats)})"]
    header += [name for name, _, _ in METRICS]
    rows = []
    for setting, members in groups.items():
        cells = [mean_and_std([j.metric(model, key) for j in members]) for _, model, key in METRICS]
        rows.append([*setting, str(len(members)), *cells])
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([["" if cell == "—" else cell for cell in row] for row in rows])


def summarize(sweep_dir: Path) -> str:
    """Write summary.md / summary.csv (/ summary_mean.csv) into `sweep_dir`; returns the md."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job directories (.hydra/overrides.yaml) in it")
    keys = varying_keys(jobs)
    common = [f"{k}={v}" for k, v in jobs[0].overrides.items() if k not in keys]
    header, rows = per_job_rows(jobs, keys)
    write_csv(sweep_dir / "summary.csv", header, rows)
    finished = sum(job.results is not None for job in jobs)
    parts = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} job{'s' * (len(jobs) != 1)}, {finished} with results.json; common "
        "overrides: "
        f"{' '.join(common) or '(none)'}. AP values × 100 (COCO AP@[.5:.95], AP@.5, AP@.75).",
        "",
        markdown(header, rows),
    ]
    if any(k in REPEAT_KEYS for k in keys):
        header, rows = mean_rows(jobs, keys)
        write_csv(sweep_dir / "summary_mean.csv", header, rows)
        parts += ["", "Mean ± sample std over seeds / folds:", "", markdown(header, rows)]
    text = "\n".join(parts) + "\n"
    (sweep_dir / "summary.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelmatch.summarize", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    args = parser.parse_args(argv)
    try:
        print(summarize(args.sweep_dir), end="")
    except FileNotFoundError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
