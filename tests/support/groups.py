"""The suite's three groups: every test gets exactly one marker, from what it uses (README,
"Developing"):

- ``realdata``: reads the real recordings or the original pipeline's artifact
  (../shared/weld-audio, ../shared/compat), whatever else it uses;
- ``integration``: starts a real part (Mosquitto, PulseAudio, Chromium, a loop-mounted disk,
  the base-install venv), trains or exports a model, runs weldmon's CLIs as subprocesses, or
  is marked slow, without the real recordings;
- ``unit``: everything else: in-process, about a second at most (``pytest -m unit``).

Assigned centrally, from the fixtures a test requests, its part markers and the two tables
below, so a new test file is grouped without a line of its own. A unit test that turns out
slow is marked ``slow`` or listed in SLOW_TESTS, which moves it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

GROUPS = ("unit", "integration", "realdata")
# The fixtures (tests/support/data.py) and marker that mean the real recordings or artifact.
REALDATA_FIXTURES = frozenset({"weld_audio_dir", "recordings", "compat_artifact"})
REALDATA_MARKERS = frozenset({"real_data"})
# The fixtures that start a real part, and the markers of tests that start one themselves.
INTEGRATION_FIXTURES = frozenset(
    {
        "mosquitto",
        "mosquitto_tls",
        "mosquitto_auth",
        "mqtt_subscriber",
        "pulse_server",
        "pulse",
        "chromium",
        "console_run",
        "ext4_mount",
        "full_disk",
        "base_python",
    }
)
INTEGRATION_MARKERS = frozenset({"broker", "audio", "browser", "slow"})
# Modules whose fixtures train (and export) a tiny model: every test of theirs waits for it.
TRAINING_MODULES = frozenset(
    {
        "test_enroll.py",
        "test_evaluate_report.py",
        "test_export.py",
        "test_faults_training.py",
        "test_model_info.py",
        "test_sweep.py",
        "test_training_augment.py",
        "test_training_cv.py",
        "test_training_ensemble.py",
        "test_training_loop.py",
    }
)
# Single tests, by module and function (all parameters), that took over 2 s each (~0.7 s on
# a quiet machine) in a run of the unit group at load 7, 2026-12-07: they run weldmon's CLIs
# as subprocesses (each pays torch's import), script or export a model, serve OPC UA, or
# draw hundreds of hypothesis examples. test_groups checks that each one still exists.
SLOW_TESTS: dict[str, tuple[str, ...]] = {
    "test_alert_rule.py": ("test_an_alert_is_never_followed_by_a_good_result",),
    "test_cli_consistency.py": ("test_messages_name_their_command_and_bad_input_exits_2",),
    "test_config_tools.py": (
        "test_a_config_that_would_start_checks_ok_and_creates_nothing",
        "test_check_refuses_a_model_the_daemon_would_refuse",
        "test_check_reports_every_problem_at_once_and_exits_2",
        "test_example_prints_the_documented_example_which_checks_ok_with_a_real_model",
    ),
    "test_console_fleet_counts.py": ("test_bad_mute_and_cooldown_arguments_exit_2",),
    "test_crackle_segmenter.py": ("test_boundaries_do_not_depend_on_block_sizes",),
    "test_demo_table.py": (
        "test_the_demo_shift_replayed_gives_one_row_per_weld_with_replays_verdicts",
    ),
    "test_deploy_cli.py": ("test_predict_window_past_the_end_is_an_error_not_a_crash",),
    "test_events.py": ("test_random_json_never_crashes_the_trigger_parser",),
    "test_faults_config.py": (
        "test_a_key_given_twice_is_an_error_naming_the_key_and_both_lines",
        "test_an_empty_file_names_the_required_keys",
        "test_schema_errors_and_file_errors_are_reported_together",
    ),
    "test_faults_inputs.py": (
        "test_a_huge_config_is_refused_from_its_size",
        "test_a_huge_model_is_refused_from_its_size",
        "test_console_refuses_a_huge_config_or_auth_file_from_its_size",
        "test_console_refuses_tls_files_that_are_not_pem",
    ),
    "test_faults_install.py": ("test_the_built_wheel_carries_the_example_config",),
    "test_faults_textfiles.py": (
        "test_a_file_with_a_nul_byte_is_refused_as_not_text",
        "test_a_latin1_file_is_refused_naming_line_column_and_byte",
    ),
    "test_onnx.py": (
        "test_convert_names_a_kind_of_scorer_it_cannot_rebuild",
        "test_convert_refuses_a_checkpoint_and_a_wrong_output_name",
        "test_export_writes_the_twin_and_its_sha256_file",
        "test_onnx_window_probs_equal_torchscript_for_any_batch",
    ),
    "test_opcua.py": (
        "test_a_client_reads_the_verdict_and_acknowledges_the_alert",
        "test_a_failing_health_probe_shows_unknown_and_the_server_goes_on",
        "test_a_port_in_use_is_reported_not_raised_later",
    ),
    "test_properties.py": (
        "test_a_result_from_any_window_probabilities_validates_and_pools_with_topk_pool",
        "test_a_valid_config_survives_a_yaml_round_trip_unchanged",
        "test_any_config_mapping_parses_or_fails_with_config_error_naming_each_key",
    ),
    "test_segment_cli.py": ("test_bad_arguments_exit_2",),
    "test_segmentation.py": ("test_boundaries_do_not_depend_on_block_sizes",),
    "test_shadow.py": (
        "test_a_candidate_shadow_judges_the_same_windows_with_its_own_model",
        "test_a_shadow_of_the_same_artifact_gives_every_weld_the_same_verdict_under_its_weld_id",
        "test_a_stalled_shadow_is_skipped_and_counted_and_never_delays_a_production_verdict",
    ),
    "test_systemd_units.py": ("test_write_execute_ban_breaks_the_models_convolutions",),
    "test_teach_in.py": (
        "test_the_cli_refuses_a_bad_config_or_station_with_exit_2_and_sends_nothing",
        "test_the_cli_says_when_the_broker_cannot_be_reached_with_exit_1",
    ),
}


def group_of(fixtures: set[str], markers: set[str], module: str = "", function: str = "") -> str:
    """The one group of test `function` of `module` (a file name) that requests `fixtures`
    and carries `markers`."""
    if fixtures & REALDATA_FIXTURES or markers & REALDATA_MARKERS:
        return "realdata"
    if fixtures & INTEGRATION_FIXTURES or markers & INTEGRATION_MARKERS:
        return "integration"
    if module in TRAINING_MODULES or function in SLOW_TESTS.get(module, ()):
        return "integration"
    return "unit"


def assign_groups(items: Iterable[pytest.Item]) -> None:
    """Mark each collected test with its group (one already grouped by hand keeps it)."""
    for item in items:
        markers = {mark.name for mark in item.iter_markers()}
        if markers & set(GROUPS):
            continue  # grouped by hand: a test whose cost its fixtures do not show
        fixtures = set(getattr(item, "fixturenames", ()))
        function = getattr(item, "originalname", item.name)
        item.add_marker(group_of(fixtures, markers, item.path.name, function))
