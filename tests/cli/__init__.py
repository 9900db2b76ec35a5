"""Tests of the `featherface` command line (featherface.cli), run in-process through `featherface.cli.main`."""

from __future__ import annotations

import shutil
from pathlib import Path

TWO_VAL_IMAGES = ("0_Parade_marchingband_1_653.jpg", "0_Parade_Parade_0_664.jpg")  # 1024x369, 1024x372


def copy_two_val_images(widerface_dir: Path, tmp_path: Path) -> Path:
    """Copy TWO_VAL_IMAGES into `<tmp>/images/0--Parade` and return that event folder."""
    images = tmp_path / "images" / "0--Parade"
    images.mkdir(parents=True)
    for name in TWO_VAL_IMAGES:
        shutil.copyfile(widerface_dir / "val" / "images" / "0--Parade" / name, images / name)
    return images
