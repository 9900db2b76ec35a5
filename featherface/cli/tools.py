"""The user tools: detect, evaluate, attention, transfer, pack and info. Each command calls library functions
(inference, eval, analysis, models, data) and prints what they did; errors propagate to
:func:`featherface.cli.main`, which maps them to exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from featherface.analysis.attention import analyze_folder, network_inputs, select_images, write_analysis
from featherface.analysis.bypass import bypass_attention
from featherface.cli.common import TqdmProgress, print_ap
from featherface.data.pack import pack_train_folders
from featherface.eval.predict import UnreadableImageError, predict_folder
from featherface.eval.widerface import UnknownImagesError
from featherface.inference.detect import run_detect
from featherface.inference.detector import WIDER_PROTOCOL, FaceDetector
from featherface.inference.images import list_images
from featherface.inference.peers import peer_detector
from featherface.inference.settings import SettingError
from featherface.models.averaging import average_checkpoints
from featherface.models.checkpoints import save_checkpoint, write_checkpoint_file
from featherface.models.loading import load_trained_model
from featherface.models.registry import create_model
from featherface.models.summary import summarize
from featherface.models.transfer import transfer_weights
from featherface.stages.score import score_folder
from featherface.utils.io import write_json_atomic
from featherface.utils.provenance import write_record

__all__ = ["UNKNOWN_HINT_EVALUATE", "cmd_attention", "cmd_detect", "cmd_evaluate", "cmd_info", "cmd_pack",
           "cmd_transfer"]

#: What `featherface evaluate` says about prediction files of images that are not in the ground truth.
UNKNOWN_HINT_EVALUATE = "pass --ignore-unknown to leave them out"


def cmd_info(args: argparse.Namespace) -> int:
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    gt_dir = Path(args.gt) if args.gt else Path(args.images).parent if args.images else None
    if gt_dir is None:
        raise ValueError("give --gt (the folder with the four wider_*_val.mat files) or --images")
    if args.bypass_attention and (args.predictions or args.peer):
        raise ValueError("--bypass-attention needs a model of ours (--model/--weights with --images)")
    if args.predictions:
        given = [flag for flag, on in (("--box-voting", args.box_voting), ("--threshold", args.threshold is not None))
                 if on]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise ValueError(f"{' and '.join(given)} {verb} when a detector runs (--images); a prediction folder is "
                             "scored as it is")
    settings = WIDER_PROTOCOL.updated(box_voting=args.box_voting)
    if args.threshold is not None:
        try:
            settings = settings.updated(score_threshold=args.threshold)
        except SettingError as err:
            raise ValueError(f"--threshold {err.rule}, got {err.value}") from None
    if settings != WIDER_PROTOCOL:
        voting = "on" if settings.box_voting else "off"
        print(f"not the protocol: score > {settings.score_threshold}, box voting {voting}")
    if args.predictions:
        pred_dir = Path(args.predictions)
    else:
        if not args.images or not (args.weights or args.peer):
            raise ValueError("give either --predictions DIR, or --model/--weights or --peer with --images DIR")
        if args.peer:
            detector = peer_detector(args.peer, args.weights, settings=settings)
        else:
            detector = FaceDetector.from_pretrained(args.model, args.weights, settings=settings.updated(batch_size=1))
            if args.bypass_attention:
                _bypass_attention(detector, args, out_dir)
        pred_dir = out_dir / "predictions"
        with TqdmProgress(not args.quiet) as progress:
            try:
                summary = predict_folder(detector, args.images, pred_dir, progress=progress,
                                         skip_unreadable=args.skip_unreadable)
            except UnreadableImageError as err:
                raise err.with_hint("pass --skip-unreadable to leave it out") from None
        print(f"predicted {summary.images} images at original size, {summary.seconds_per_image:.3f} s/image")
        for rel, reason in summary.skipped.items():
            print(f"  skipped {rel}: {reason}", file=sys.stderr)
    try:
        result = score_folder(pred_dir, gt_dir, out_dir, args.iou, "ignore" if args.ignore_unknown else "error")
    except UnknownImagesError as err:
        raise err.with_hint(UNKNOWN_HINT_EVALUATE) from None
    print_ap(result, "evaluate")
    print(f"AP and PR curves in {out_dir}")
    return 0


def _bypass_attention(detector: FaceDetector, args: argparse.Namespace, out_dir: Path) -> None:
    """Switch the detector's attention off (featherface.analysis.bypass) and record what was done in bypass.json."""
    sources = [Path(p) for p in (args.calibration_images or [args.images])]
    files = [f for src in sources for f in (list_images(src) if src.is_dir() else [src])]
    chosen = select_images(files, args.calibration_count) if files else []
    inputs = network_inputs(chosen, detector.settings.long_side, detector.device)
    report = bypass_attention(detector.model, inputs)
    write_json_atomic(out_dir / "bypass.json", {**report.to_dict(), "calibration_files": [str(f) for f in chosen]
                                                if report.fixed else []})
    print(f"attention bypassed: {report.describe()}")


def cmd_attention(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    with TqdmProgress(not args.quiet) as progress:
        analysis = analyze_folder(args.weights, args.images, model=args.model, max_images=args.max_images or None,
                                  long_side=args.long_side or None, device=args.device, progress=progress)
    written = write_analysis(analysis, out_dir)
    summary = analysis.summary
    settings = {k: getattr(args, k) for k in ("model", "weights", "images", "max_images", "long_side", "device")}
    write_record(out_dir, "attention", {"attention": settings}, inputs=[args.weights],
                 extra={"images": summary["images"], "modules": [m["name"] for m in summary["modules"]]})
    print(f"attention: {len(summary['modules'])} ODConv2d modules over {summary['images']} images "
          f"({summary['seconds']:.1f} s); {', '.join(p.name for p in written.values())} in {out_dir}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(device=args.device, score_threshold=args.threshold, nms_iou=args.nms_iou, long_side=args.long_side,
                   box_voting=args.box_voting)
    if args.weights:
        detector = FaceDetector.from_pretrained(args.model, args.weights, **options)
    elif args.model:
        raise ValueError("--model needs --weights (the built-in weights record their own model)")
    else:
        detector = FaceDetector.builtin(**options)
    out_dir = Path(args.out)
    with TqdmProgress(not args.quiet) as progress:
        summary = run_detect(
            detector, args.inputs, out_dir, save_images=args.save_images, save_json=args.save_json,
            progress=progress, max_frames=args.max_frames, keep_going=args.keep_going,
        )
    write_json_atomic(out_dir / "summary.json", summary.to_dict())
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


def cmd_transfer(args: argparse.Namespace) -> int:
    source = load_trained_model(args.weights, args.source_model)
    target = create_model(args.model)
    report = transfer_weights(source, target, kernel_noise=args.kernel_noise, seed=args.seed,
                              source_name=str(args.weights))
    save_checkpoint(args.out, target, kind="transfer", source=str(args.weights), model_name=args.model)
    print(f"{args.out}: {args.model} with {len(report.loaded)} tensors from {args.weights}; "
          f"{len(report.not_loaded)} kept their initialisation, {len(report.skipped)} source tensors unused")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    checkpoint = average_checkpoints(args.weights, args.mix)
    write_checkpoint_file(args.out, checkpoint)
    mix = ", ".join(f"{s['path']} x{s['weight']:.3g}" for s in checkpoint["averaged_from"])
    print(f"{args.out}: the mean of {len(args.weights)} checkpoints ({mix}), {len(checkpoint['model'])} tensors")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    summary = pack_train_folders(args.folders, args.out, max_side=args.max_side, quality=args.quality)
    print(f"{args.out}: {summary.images} images ({summary.downscaled} downscaled), {summary.bytes / 2**20:.1f} MiB")
    return 0
