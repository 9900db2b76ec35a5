"""The pipeline's stage verbs: download, verify, validate, train, predict, score, references, report, study-table.

Each command parses nothing itself (:mod:`featherface.cli.parser` did), loads ``--params`` with its ``--set``
overrides, runs the stage's ``run`` (:mod:`featherface.stages`) and prints what it did. Errors propagate to
:func:`featherface.cli.main`, which maps them to exit codes. The export and benchmark stages are verbs of
:mod:`featherface.cli.deploy` (they are user tools too).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from featherface.cli.common import TqdmProgress, print_ap, stage_params
from featherface.config import load_params
from featherface.eval.widerface import UnknownImagesError
from featherface.stages import download, predict, references, report, score, study, validate, verify
from featherface.train import distributed
from featherface.stages.train import run_training
from featherface.train.faults import NonFiniteLossError

__all__ = ["UNKNOWN_HINT_SCORE", "cmd_download", "cmd_predict", "cmd_references", "cmd_report", "cmd_score",
           "cmd_study_table", "cmd_train", "cmd_validate", "cmd_verify", "train_logging"]

#: What `featherface score` says about prediction files of images that are not in the ground truth.
UNKNOWN_HINT_SCORE = ("score only the val images, or run `featherface evaluate --predictions DIR --gt DIR "
                      "--ignore-unknown` to leave them out")


def cmd_download(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    with TqdmProgress(not args.quiet) as progress:
        manifest = download.run(params, root, progress=progress)
    print(f"download: data ready under {manifest.parent} (manifest {manifest})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    out_dir = Path(args.out) if args.out else root / verify.VERIFY_DIR
    with TqdmProgress(not args.quiet) as progress:
        result = verify.run(params, root, out_dir, progress=progress)
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    if not result.ok:
        print(f"verify: FAILED ({len(result.problems)} problems; report {out_dir / 'report.json'})", file=sys.stderr)
        for problem in result.problems[:20]:
            where = problem.get("path", "")
            if problem.get("line") is not None:
                where = f"{where}:{problem['line']}"
            print(f"  {problem.get('kind')}: {where}: {problem.get('message')}", file=sys.stderr)
        return 1
    print(f"verify: OK ({counts}); report {out_dir / 'report.json'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    out_dir = Path(args.out) if args.out else root / validate.VALIDATE_DIR
    result = validate.run(params, root, out_dir)
    for m in result.models:
        status = "ok" if m.within_budget and m.shapes_ok else "FAILED: " + "; ".join(m.problems)
        print(f"  {m.name:<22} {m.parameters:>9,} params  {m.macs_640 / 1e9:.3f} GMACs@640  {status}")
    if result.golden_skipped:
        print(f"  ODConv golden vectors: skipped ({result.golden_skipped})")
    else:
        worst = max((d for g in result.odconv_golden for d in g.max_abs_diff.values()), default=float("nan"))
        passed = sum(g.ok for g in result.odconv_golden)
        print(f"  ODConv golden vectors: {passed}/{len(result.odconv_golden)} files match (max |diff| {worst:.2e})")
        for g in result.odconv_golden:
            if not g.ok:
                print(f"    {g.name}: FAILED {g.error or g.max_abs_diff}")
    print(f"validate: {'OK' if result.ok else 'FAILED'}; report {out_dir / 'report.json'}")
    return 0 if result.ok else 1


def train_logging(args: argparse.Namespace) -> None:
    """The train verb's logging (also under ``torchrun``): timestamped lines, tagged with the rank when
    distributed; only rank 0 logs at INFO (DEBUG with ``-v``) level, the others only warnings."""
    env = distributed.detect()
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level if env.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {env.rank}] %(levelname)s %(name)s: %(message)s"
                        if env.distributed else "%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_train(args: argparse.Namespace) -> int:
    """Train as the ``train:`` section says; under ``torchrun`` only rank 0 draws the progress bar and prints."""
    is_main = distributed.detect().is_main
    with TqdmProgress(not args.quiet and is_main) as progress:
        try:
            final = run_training(args.params, args.set or (), args.out, args.resume or False, progress,
                                 overwrite=args.overwrite)
        except NonFiniteLossError as err:
            print(f"featherface train: stopped: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as err:  # TrainingInterrupted says what last.pt holds
            progress.close()  # before the message, so the bar does not overwrite it
            print(f"featherface train: {err or 'interrupted'}", file=sys.stderr)
            return 130
    if is_main:
        print(f"train: final model {final}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    with TqdmProgress(not args.quiet) as progress:
        done = predict.run(params, root, images=args.images, out_dir=args.out, progress=progress)
    for rel, reason in done.summary.skipped.items():
        print(f"  skipped {rel}: {reason}", file=sys.stderr)
    print(
        f"predict: {done.summary.images} images, {done.summary.detections} detections, "
        f"{done.summary.seconds_per_image:.3f} s/image on {done.device}; files in {done.predictions}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    try:
        result = score.run(params, root, predictions=args.predictions, out_dir=args.out)
    except UnknownImagesError as err:
        raise err.with_hint(UNKNOWN_HINT_SCORE) from None
    print_ap(result, f"score ({params.predict.model})")
    return 0


def cmd_references(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    with TqdmProgress(not args.quiet) as progress:
        content = references.run(params, root, progress=progress)
    for row in content["detectors"]:
        ap = "  ".join(f"{s.capitalize()} {'n/a' if v is None else f'{100 * v:.2f}'}" for s, v in row["ap"].items())
        print(f"  {row['name']:<24} {ap}  ({row['num_images']} of the {row['num_images_total']} val images)")
    print(f"references: {len(content['detectors'])} detectors; "
          f"{root / references.REFERENCES_DIR / references.REFERENCES_FILE}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The report of ``--results``; without ``--params`` and without a ``params.yaml`` here, the results folder
    defaults to ``./results`` and the download record is read only from ``--data``."""
    path = Path(args.params or "params.yaml")
    if args.params or args.set or path.is_file():
        params, root = load_params(path.resolve(), args.set or ()), path.resolve().parent
    else:
        params, root = None, Path()
    print(f"report: {report.run(params, root, results=args.results, out_dir=args.out, data_dir=args.data)}")
    return 0


def cmd_study_table(args: argparse.Namespace) -> int:
    params, root = stage_params(args)
    path = study.run(params, root, out_dir=args.out, params_file=args.params)
    print(path.read_text(), end="")
    return 0
