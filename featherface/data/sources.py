"""Where the data comes from: the official locations of WIDER FACE, its annotations and the backbone weights.

This module is data, not code: a manifest of `Source` records (file name, Google Drive id or URL, the
checksums that are published or that this project measured on the official files, and how each archive
maps onto the data layout), plus the sha256 of the official files as they sit in the layout.

Layout written by the download stage, relative to ``data.root``::

    widerface/train/images/<event>/<name>.jpg
    widerface/train/label.txt                  RetinaFace layout (boxes + 5 landmarks)
    widerface/val/images/<event>/<name>.jpg
    widerface/val/wider_{face,easy,medium,hard}_val.mat   official evaluation ground truth
    widerface/wider_face_split/...             official box annotations (txt), for cross-checks
    weights/mobilenetV1X0.25_pretrain.tar      ImageNet MobileNetV1-0.25 (backbone init)

Provenance of the figures:

- WIDER FACE archives (Yang, Luo, Loy, Tang, "WIDER FACE: A Face Detection Benchmark", CVPR 2016): Google
  Drive ids and md5 as listed by torchvision 0.29 ``torchvision/datasets/widerface.py`` (``FILE_LIST``,
  ``ANNOTATIONS_FILE``).
- ``eval_tools.zip``: the WIDER FACE site's evaluation kit (``support/eval_script/eval_tools.zip``); the
  site publishes no checksum for the archive. The four ``.mat`` files inside are checked after extraction
  against `OFFICIAL_LAYOUT_SHA256`, which this project measured on the official files.
- ``retinaface_gt_v1.1.zip``: RetinaFace train/val labels with landmarks. biubug6/Pytorch_Retinaface's
  README links it on Dropbox (and Baidu); no Google Drive copy of this zip is linked there and no checksum
  is published.
- ``mobilenetV1X0.25_pretrain.tar``: biubug6/Pytorch_Retinaface README, "Pretrain model and trained model
  are put in google cloud" (Drive folder ``1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1``); the file id inside that
  folder is the one public download scripts fetch for this file name. Its sha256 was measured on the
  official file (as committed in fokouarnaud/FeatherFace), so a wrong file cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The file name of the ImageNet-pretrained MobileNetV1-0.25 backbone, and where it goes in the layout.
PRETRAIN_FILENAME = "mobilenetV1X0.25_pretrain.tar"
PRETRAIN_LAYOUT_PATH = f"weights/{PRETRAIN_FILENAME}"

#: The four official evaluation ground-truth files, as they sit in ``widerface/val``.
VAL_MAT_FILES = ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat")


@dataclass(frozen=True)
class Extract:
    """One mapping from an archive member onto the layout.

    Attributes:
        member: a path inside the archive; ending in ``/`` it is a folder whose whole content is taken.
        dest: the destination relative to the data root (a folder when `member` is a folder).
    """

    member: str
    dest: str


@dataclass(frozen=True)
class Source:
    """One downloadable file.

    Attributes:
        name: a short key (``wider_train``...).
        filename: the file name it is saved under in ``data.archive_dir``.
        kind: ``zip`` (extracted per `extract`) or ``file`` (copied to ``extract[0].dest``).
        gdrive_id: the Google Drive file id, when it is hosted there.
        url: a direct URL (used when there is no Drive id, or as a fallback).
        md5 / sha256: the published or measured checksum of the downloaded file; None when unknown.
        size: the size in bytes when known (detects truncated files before hashing); None when unknown.
        extract: how the file maps onto the layout.
        layout_sha256: (layout path, sha256) pairs the extracted files must match (measured on the
            official files); checked right after extraction.
        reference: where the id/URL and checksum were read.
    """

    name: str
    filename: str
    kind: Literal["zip", "file"]
    extract: tuple[Extract, ...]
    gdrive_id: str | None = None
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    layout_sha256: tuple[tuple[str, str], ...] = ()
    reference: str = ""


#: sha256 of official files as they sit in the layout (relative to the data root). Measured by this
#: project on the official files: the evaluation kit's ground truth and biubug6's pretrained backbone.
OFFICIAL_LAYOUT_SHA256: dict[str, str] = {
    "widerface/val/wider_face_val.mat": "1dfe6a9853950f9dde256b5e8bb75d8f272e6bc02a15ae1968f5a9b883f458cb",
    "widerface/val/wider_easy_val.mat": "c2fb672d16f75653eb89fb8bc437a7d060896a71cd7a65c1a5a3e4479024099c",
    "widerface/val/wider_medium_val.mat": "4a031970bc132cef5cfacd05068aabcf4fe15d4a31a1e9f4f00eb134fdf449c1",
    "widerface/val/wider_hard_val.mat": "bb1af19dc5bc4dd9517dd8ae8096326c68175f2c3411763bdd4f23fa98638b78",
    PRETRAIN_LAYOUT_PATH: "75c37f8d438b7c6aed2e6b310fd0540c40dabf0dd820770bd7082668dfd7c1c1",
}


WIDER_SITE = "http://shuoyang1213.me/WIDERFACE"

WIDER_TRAIN = Source(
    name="wider_train",
    filename="WIDER_train.zip",
    kind="zip",
    gdrive_id="15hGDLhsx8bLgLcIRD5DhYt5iBxnjNF1M",
    md5="3fedf70df600953d25982bcd13d91ba2",
    sha256=None,  # not published; md5 from torchvision
    size=None,  # not published
    extract=(Extract("WIDER_train/images/", "widerface/train/images"),),
    reference="torchvision 0.29 datasets/widerface.py FILE_LIST",
)

WIDER_VAL = Source(
    name="wider_val",
    filename="WIDER_val.zip",
    kind="zip",
    gdrive_id="1GUCogbp16PMGa39thoMMeWxp7Rp5oM8Q",
    md5="dfa7d7e790efa35df3788964cf0bbaea",
    sha256=None,  # not published; md5 from torchvision
    size=None,  # not published
    extract=(Extract("WIDER_val/images/", "widerface/val/images"),),
    reference="torchvision 0.29 datasets/widerface.py FILE_LIST",
)

WIDER_SPLIT = Source(
    name="wider_face_split",
    filename="wider_face_split.zip",
    kind="zip",
    url=f"{WIDER_SITE}/support/bbx_annotation/wider_face_split.zip",
    md5="0e3767bcf0e326556d407bf5bff5d27c",
    sha256=None,  # not published; md5 from torchvision
    size=None,  # not published
    extract=(Extract("wider_face_split/", "widerface/wider_face_split"),),
    reference="torchvision 0.29 datasets/widerface.py ANNOTATIONS_FILE",
)

WIDER_EVAL_TOOLS = Source(
    name="wider_eval_tools",
    filename="eval_tools.zip",
    kind="zip",
    url=f"{WIDER_SITE}/support/eval_script/eval_tools.zip",
    md5=None,  # unknown: the WIDER FACE site publishes no checksum (the .mat files inside are checked)
    sha256=None,  # unknown, as above
    size=None,  # unknown
    extract=tuple(
        Extract(f"eval_tools/ground_truth/{name}", f"widerface/val/{name}") for name in VAL_MAT_FILES
    ),
    layout_sha256=tuple(
        (f"widerface/val/{name}", OFFICIAL_LAYOUT_SHA256[f"widerface/val/{name}"]) for name in VAL_MAT_FILES
    ),
    reference="WIDER FACE site, 'Evaluation code' (support/eval_script/eval_tools.zip)",
)

RETINAFACE_LABELS = Source(
    name="retinaface_gt",
    filename="retinaface_gt_v1.1.zip",
    kind="zip",
    gdrive_id=None,  # unknown: biubug6's README links this zip on Dropbox and Baidu only
    url="https://www.dropbox.com/s/7j70r3eeepe4r2g/retinaface_gt_v1.1.zip?dl=1",
    md5=None,  # unknown: no checksum published
    sha256=None,  # unknown: no checksum published
    size=None,  # unknown
    extract=(Extract("train/label.txt", "widerface/train/label.txt"),),
    reference="biubug6/Pytorch_Retinaface README, Data step 2 (Dropbox link; ?dl=1 for the raw file)",
)

MOBILENET_PRETRAIN = Source(
    name="mobilenet_pretrain",
    filename=PRETRAIN_FILENAME,
    kind="file",
    gdrive_id="1q36RaTZnpHVl4vRuNypoEMVWiiwCqhuD",
    md5=None,  # not published; the sha256 below was measured on the official file
    sha256="75c37f8d438b7c6aed2e6b310fd0540c40dabf0dd820770bd7082668dfd7c1c1",
    size=3827150,
    extract=(Extract(PRETRAIN_FILENAME, PRETRAIN_LAYOUT_PATH),),
    layout_sha256=((PRETRAIN_LAYOUT_PATH, OFFICIAL_LAYOUT_SHA256[PRETRAIN_LAYOUT_PATH]),),
    reference="biubug6/Pytorch_Retinaface README, Training (Google Drive folder 1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1)",
)

#: Every source the ``gdown`` download stage fetches, in order.
SOURCES: tuple[Source, ...] = (
    WIDER_TRAIN,
    WIDER_VAL,
    WIDER_SPLIT,
    WIDER_EVAL_TOOLS,
    RETINAFACE_LABELS,
    MOBILENET_PRETRAIN,
)
