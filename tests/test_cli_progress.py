"""Progress output: a redrawn bar on a terminal, steady plain lines in logs and pipes."""

from __future__ import annotations

import io

from cli.progress import TerminalProgress
from pipeline.events import Done, Notice, Progress


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _logged(events, clock=None):
    stream = FakeStream(tty=False)
    sink = TerminalProgress(stream, clock=clock or FakeClock())
    for event in events:
        sink(event)
    return stream.getvalue().splitlines(), sink


def test_log_prints_stage_start_every_tenth_and_done():
    events = [Progress("null-text inversion", step, 50, None if step == 0 else 50.0 - step) for step in range(51)]
    lines, sink = _logged(events)
    assert lines[0] == "null-text inversion: started, 50 steps"
    assert lines[1] == "null-text inversion: 5/50 (10%), ETA 0:45"
    assert lines[-2] == "null-text inversion: 45/50 (90%), ETA 0:05"
    assert lines[-1] == "null-text inversion: 50/50 done"
    assert len(lines) == 11 and sink.stage == "null-text inversion"


def test_log_prints_every_30_seconds_when_a_tenth_takes_longer():
    clock = FakeClock()
    stream = FakeStream(tty=False)
    sink = TerminalProgress(stream, clock=clock)
    sink(Progress("DDIM inversion", 0, 1000, None))
    for step in range(1, 40):
        clock.now = step * 10.0  # 10 s a step: a tenth of the stage would take 1000 s
        sink(Progress("DDIM inversion", step, 1000, (1000 - step) * 10.0))
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["DDIM inversion: started, 1000 steps", "DDIM inversion: 3/1000 (0%), ETA 166:10"]
    steps = [int(line.split(": ")[1].split("/")[0]) for line in lines[1:]]
    assert steps == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39]


def test_every_stage_gets_its_own_start_and_done_lines():
    events = [Progress(stage, step, 4, 1.0) for stage in ("DDIM inversion", "editing") for step in range(5)]
    lines, sink = _logged(events)
    assert [line for line in lines if "started" in line or "done" in line] == [
        "DDIM inversion: started, 4 steps", "DDIM inversion: 4/4 done",
        "editing: started, 4 steps", "editing: 4/4 done",
    ]
    assert sink.stage == "editing"


def test_notices_are_printed_and_other_events_ignored():
    lines, _ = _logged([Notice("The prompt is cut after 'meadow'."), Done(None, None, None, "e1", False, None)])
    assert lines == ["note: The prompt is cut after 'meadow'."]


def test_terminal_bar_is_redrawn_in_place():
    stream = FakeStream(tty=True)
    sink = TerminalProgress(stream, width=10)
    for step in range(3):
        sink(Progress("editing", step, 2, 1.0))
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("[##########] 2/2 ETA 0:01\n")
    assert "started" not in text


def test_close_ends_an_unfinished_bar_so_the_next_line_starts_clean():
    stream = FakeStream(tty=True)
    sink = TerminalProgress(stream, width=4)
    sink(Progress("DDIM inversion", 1, 4, 3.0))
    sink.close()
    sink.close()  # nothing more: the bar is already ended
    assert stream.getvalue() == "\r      DDIM inversion [#---] 1/4 ETA 0:03\n"
    sink(Notice("The project was repaired."))
    assert stream.getvalue().endswith("0:03\nnote: The project was repaired.\n")
