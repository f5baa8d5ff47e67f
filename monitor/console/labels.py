"""The verdicts a reviewer can give: the dataset's label codes.

The codes are the training dataset's (``training.dataset.LABEL_CODES``); the console may not
import training, so they are restated here and a test keeps the two equal.
"""

from __future__ import annotations

from monitor.clips import GOOD_LABEL_CODE

LABEL_CODES: dict[str, str] = {
    "00": "good_weld",
    "01": "excessive_penetration",
    "02": "burn_through",
    "06": "overlap",
    "07": "lack_of_fusion",
    "08": "excessive_convexity",
    "11": "crater_cracks",
}
DEFECT_CODES = {code: name for code, name in LABEL_CODES.items() if code != GOOD_LABEL_CODE}
