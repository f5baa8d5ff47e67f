"""Settings of the crackle segmenter (``deploy.segment.crackle``).

Which were searched and which were fixed by reasoning, and the leave-one-setup-out figures
that chose them: docs/segmentation.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from deploy.strict_model import StrictModel


class CrackleParams(StrictModel):
    """Crackle-segmenter settings; the defaults are what the leave-one-setup-out bench chose."""

    frame_s: float = Field(
        0.05, gt=0.0, le=0.5, description="Frame length (s): 1/10 of the 0.5 s target."
    )
    band_low_hz: float = Field(
        2000.0,
        ge=0.0,
        description="Lower edge of the band whose kurtosis is the crackle (Hz): above the "
        "robot's idle hum, where every shared arc stands out most.",
    )
    band_high_hz: float = Field(
        8000.0, gt=0.0, description="Upper edge of the crackle band (Hz); capped at Nyquist."
    )
    tone_clip_db: float | None = Field(
        10.0,
        gt=0.0,
        description="Bins of the crackle band more than this (dB) over the band's median bin "
        "are clipped to it in each frame before the crackle is measured, so that a steady "
        "tone in the band (a drive's whine) cannot mask the arc; None turns it off.",
    )
    crackle_smooth_s: float = Field(
        0.25,
        ge=0.0,
        description="Centred span (s) of the mean of log10 kurtosis; rounded to an odd number "
        "of frames. Bridges the arc's own 50-100 ms flicker dips.",
    )
    crackle_on: float = Field(
        5.5,
        gt=3.0,
        description="Kurtosis (mean of logs over the span) at and above which a frame sounds "
        "like an arc. Gaussian noise of any level or colour reads 3.",
    )
    level_smooth_s: float = Field(
        0.25,
        ge=0.0,
        description="Centred mean span (s) of the profile band powers, before the median.",
    )
    level_median_s: float = Field(
        0.55,
        ge=0.0,
        description="Centred median span (s) over the smoothed band powers: keeps steps sharp "
        "and ignores the flicker's peaks (a quieter neighbour's loudest moments).",
    )
    floor_s: float = Field(
        5.0,
        gt=0.0,
        description="Time constant (s) of the per-band noise floor, an exponential mean over "
        "idle frames that do not sound like an arc; levels are compared as power above it.",
    )
    edge_db: float = Field(
        7.0,
        gt=0.0,
        description="How far (dB, SNR-weighted mean over the bands) a frame may fall under the "
        "weld's own level and still belong to it. Places the weld's edges on this cell's "
        "arc when a quieter arc (a neighbouring cell) goes on before or after it.",
    )
    ref_s: float = Field(
        1.0,
        gt=0.0,
        description="Span of the weld's latest on-frames whose median is its own level (s): "
        "long enough that the level cannot slide down onto a quieter arc that goes on where "
        "this weld's ends.",
    )
    min_weld_s: float = Field(
        2.0,
        gt=0.0,
        description="Shortest weld (s); shorter crackle (impacts, a grinder's touch, "
        "ignition attempts) is discarded and counted.",
    )
    confirm_s: float = Field(
        8.0,
        gt=0.0,
        description="How long after a candidate's first crackle its start is decided (s), "
        "or at its end if it is shorter, unless its level is the station's own (own_db). "
        "Its start goes to the first frame at the level of its latest ref_s, so a quieter "
        "arc that went on up to confirm_s - ref_s before this cell's is left out. Also sets "
        "how far back a start can lie (lookback_samples).",
    )
    bridge_s: float = Field(
        1.0,
        ge=0.0,
        description="How long the arc may stay off inside one weld (s): shorter dropouts are "
        "reported as dropouts of the weld; the end is decided this long after the last "
        "on-frame (plus the smoothing look-ahead).",
    )
    resume_s: float = Field(
        0.3,
        ge=0.0,
        description="After a gap of this long or more (s) the arc must sound this long again "
        "before the weld counts as going on: a hammer blow or spatter pop just after the end "
        "does not move the end. Shorter gaps (flicker) resume at once.",
    )
    edge_reach_s: float = Field(
        0.55,
        ge=0.0,
        description="Crackle frames up to this long (s) before the weld's first frame at its "
        "own level, or after its last, belong to the weld: the level is a median over "
        "level_median_s, which blurs a noisy edge, and an arc often settles for a few tenths "
        "of a second after striking (frames that loud count before the start too). A quieter "
        "arc right before or after the weld may reach into it by as much.",
    )
    fade_db: float | None = Field(
        3.0,
        gt=0.0,
        description="Crackle up to this much (dB) further under the weld's level than edge_db, "
        "right after the weld's last on-frame, is its arc fading out when it stops within "
        "fade_s (the weld then ends after it), or another cell's weaker arc when it goes on "
        "for fade_s (the weld ends at its last on-frame). None turns it off.",
    )
    fade_s: float = Field(
        1.0,
        gt=0.0,
        description="How long (s) a weaker arc after the weld may crackle and still be the "
        "weld's own arc fading out (fade_db).",
    )
    dropout_min_s: float = Field(
        0.1,
        ge=0.0,
        description="Shortest gap inside a weld that is reported as a dropout (s).",
    )
    mask_db: float = Field(
        3.0,
        ge=0.0,
        description="A frame this much (dB) louder than the weld but without crackle is masked "
        "(a grinder or impact over the arc): it neither ends the weld nor counts as a dropout.",
    )
    neighbour_db: float | None = Field(
        7.0,
        gt=0.0,
        description="A candidate this much (dB) under the station's own recent welds is taken "
        "for a neighbouring cell's weld and not reported (counted as quiet_candidates). "
        "None turns the memory of the station's welds off.",
    )
    own_db: float | None = Field(
        None,
        gt=0.0,
        description="A candidate within this much (dB) of the station's own recent welds is "
        "taken for its own: its start is decided after max(min_weld_s, ref_s) instead of "
        "confirm_s (weld_start 2 s after the arc strikes instead of 8 s), at the price of "
        "taking some neighbours' welds that start before this cell's for its own "
        "(docs/segmentation.md). None (default): always wait confirm_s.",
    )
    memory_welds: int = Field(
        3, ge=1, description="How many of the station's latest welds its own level is taken from."
    )
    memory_floor_db: float = Field(
        6.0,
        gt=0.0,
        description="The memory of the station's welds is forgotten when the noise floor moved "
        "by more than this (dB) since (a gain change or a new room would make it wrong).",
    )
    pre_roll_s: float = Field(
        0.0, ge=0.0, description="Start boundary this far before the first on-sample (s)."
    )
    max_weld_s: float = Field(
        600.0,
        gt=0.0,
        description="Longest weld (s) before an end is forced (stuck-on protection).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> CrackleParams:
        if self.band_low_hz >= self.band_high_hz:
            raise ValueError(
                f"band_low_hz ({self.band_low_hz}) must be below band_high_hz ({self.band_high_hz})"
            )
        if self.min_weld_s > self.max_weld_s:
            raise ValueError(
                f"min_weld_s ({self.min_weld_s}) must not exceed max_weld_s ({self.max_weld_s})"
            )
        if self.confirm_s < self.min_weld_s:
            raise ValueError(
                f"confirm_s ({self.confirm_s}) must not be under min_weld_s ({self.min_weld_s})"
            )
        return self
