"""The one base of every configuration section and wire message (pydantic).

Strict on purpose, everywhere alike: an unknown key is an error that names it (a typo in a
config file is never silently ignored), a parsed value cannot change afterwards (a section
handed to a thread stays what was validated), and NaN or infinity is refused in every float
field (a NaN threshold compares false with everything and would never alarm).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys refused, frozen, finite floats only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
