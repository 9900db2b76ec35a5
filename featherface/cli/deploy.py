"""The export and benchmark verbs: user tools (any model, any settings) and, with ``--params``, the pipeline's
export and benchmark stages (:mod:`featherface.stages.export`, :mod:`featherface.stages.benchmark`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from featherface.cli.common import stage_params
from featherface.deploy.benchmark import BenchmarkConfig, run_benchmark
from featherface.deploy.benchmark_result import format_markdown
from featherface.deploy.export import export_pretrained
from featherface.stages import benchmark, export
from featherface.utils.io import write_json_atomic, write_text_atomic

__all__ = ["check_stage_options", "cmd_benchmark", "cmd_export"]


def check_stage_options(args: argparse.Namespace) -> None:
    """Refuse tool options next to ``--params`` (the stage takes its settings from the file only) and ``--set``
    without ``--params``.

    Raises:
        ValueError: naming the options given.
    """
    given = [label for dest, (label, default) in args.stage_option_defaults.items()
             if getattr(args, dest) != default]
    if given:
        raise ValueError(f"--params runs the pipeline's {args.verb} stage with the settings of the parameter file; "
                         f"it does not combine with {', '.join(given)} (override with --set {args.verb}.KEY=VALUE)")
    if args.set and not args.params:
        raise ValueError("--set needs --params")


def cmd_export(args: argparse.Namespace) -> int:
    if args.params or args.set:
        check_stage_options(args)
        summary = export.run(*stage_params(args))
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
        output = Path(export.EXPORT_DIR) / f"{stem}.{'onnx' if fmt == 'onnx' else 'pt'}"
    options: dict[str, object] = {"input_size": tuple(args.input_size), "batch_size": args.batch_size,
                                  "check": not args.no_check}
    if (fmt or output.suffix.lstrip(".")) == "onnx":
        options.update(opset=args.opset, dynamic=not args.static, dynamic_batch=args.dynamic_batch,
                       fuse=not args.no_fuse)
    else:
        options.update(device=args.device)
    summary = export_pretrained(args.model, args.weights, output, format=fmt, **options)
    if args.summary:
        write_json_atomic(args.summary, summary)
    if args.provenance:
        settings = {"model": args.model, "weights": str(args.weights), "format": fmt or output.suffix.lstrip("."),
                    **options}
        export.write_export_record(output, settings, args.weights)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _named_weights(items: list[str] | None) -> dict[str, str]:
    """``--weights NAME=PATH ...`` as ``{name: path}``.

    Raises:
        ValueError: an item without ``=``.
    """
    weights = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--weights {item!r}: expected NAME=PATH")
        weights[name] = path
    return weights


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.params or args.set:
        check_stage_options(args)
        print(format_markdown(benchmark.run(*stage_params(args))))
        return 0
    weights = _named_weights(args.weights)
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
        write_json_atomic(args.json, result.to_dict())
    if args.provenance:
        benchmark.write_benchmark_record(Path(args.json).parent, {"benchmark": result.to_dict()["config"]},
                                         sorted(set(weights.values())), result)
    if args.markdown:
        write_text_atomic(args.markdown, table)
    print(table)
    return 0
