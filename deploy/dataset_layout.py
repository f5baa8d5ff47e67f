"""The labelled dataset's layout, declared once for training (indexing) and the monitor
(defect clips promoted into it)::

    good_weld/<config_folder>/<run_id>/<run_id>.flac
    defect_data_weld/<config_folder>/<run_id>/<run_id>.flac

A run id ends in its two-digit label code (``00`` good_weld, ``02`` burn_through, ...).
"""

from __future__ import annotations

GOOD_TOP_FOLDER = "good_weld"
DEFECT_TOP_FOLDER = "defect_data_weld"
TOP_FOLDERS = (GOOD_TOP_FOLDER, DEFECT_TOP_FOLDER)  # the dataset's two labelled trees
GOOD_CODE = "00"
LABEL_CODE_LENGTH = 2  # a run id's last two characters
LABEL_CODES = {
    GOOD_CODE: "good_weld",
    "01": "excessive_penetration",
    "02": "burn_through",
    "06": "overlap",
    "07": "lack_of_fusion",
    "08": "excessive_convexity",
    "11": "crater_cracks",
}
AUDIO_SUFFIX = ".flac"


def top_folder(label_code: str) -> str:
    """The labelled tree a run with ``label_code`` belongs in."""
    return GOOD_TOP_FOLDER if label_code == GOOD_CODE else DEFECT_TOP_FOLDER
