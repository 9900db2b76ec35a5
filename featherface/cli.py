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
    from featherface.provenance import write_record

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
    from featherface.data.verify import VerifyError, verify, write_report
    from featherface.provenance import write_record

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


def _add_params_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="override one parameter (validated like the file); repeatable",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


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
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"featherface {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
