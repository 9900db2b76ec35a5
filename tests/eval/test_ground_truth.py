"""The official WIDER FACE val ground truth read from the evaluation kit's .mat files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featherface.eval.ground_truth import GT_FILES, load_ground_truth


def test_official_ground_truth(widerface_dir: Path) -> None:
    val_gt = load_ground_truth(widerface_dir / "val")
    assert len(val_gt) == 3226 and len({image.event for image in val_gt.images}) == 61
    assert val_gt.boxes.shape == (39708, 4)
    assert val_gt.num_faces == {"easy": 7211, "medium": 13319, "hard": 31958}
    first = val_gt.images[0]
    assert first.key == "0--Parade/0_Parade_marchingband_1_465"
    assert first.boxes.dtype == np.float64 and first.boxes.shape[1] == 4
    assert {first.listed[s].dtype for s in ("easy", "medium", "hard")} == {np.dtype(np.int64)}
    # Easy faces are Medium faces, Medium faces are Hard faces
    easy, medium, hard = (val_gt.listed_mask[s] for s in ("easy", "medium", "hard"))
    assert not (easy & ~medium).any() and not (medium & ~hard).any()


def test_missing_ground_truth_files_are_named(tmp_path: Path, widerface_dir: Path) -> None:
    for name in (GT_FILES["face"], GT_FILES["hard"]):
        (tmp_path / name).symlink_to(widerface_dir / "val" / name)
    with pytest.raises(FileNotFoundError, match="lacks wider_easy_val.mat, wider_medium_val.mat$"):
        load_ground_truth(tmp_path)
