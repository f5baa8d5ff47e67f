"""`weldmon watch` marks what `weldmon replay --publish` made, so a replayed recording is never
mistaken for the line's own weld (issue 23: watch never marked replayed events)."""

from __future__ import annotations

from tests.test_watch import Weld, feed, fresh, screen_text


def test_replayed_verdicts_and_a_replayed_running_weld_are_marked_replay() -> None:
    live, replayed, running = Weld("cell1"), Weld("cell2"), Weld("cell3")
    state = feed(
        fresh(),
        live.result(0.1),
        replayed.result(0.9).model_copy(update={"replay": True}),
        running.start().model_copy(update={"replay": True}),
    )
    assert state.stations["cell2"].verdicts[0].replay
    assert not state.stations["cell1"].verdicts[0].replay
    current = state.stations["cell3"].current
    assert current is not None and current.replay
    lines = screen_text(state).splitlines()
    live_row = next(line for line in lines if live.weld_id in line)
    replay_row = next(line for line in lines if replayed.weld_id in line)
    assert "REPLAY" in replay_row and "REPLAY" not in live_row
    assert any("welding" in line and "REPLAY" in line for line in lines)
