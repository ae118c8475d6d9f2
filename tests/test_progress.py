"""The terminal status line of a running trial (nas.search.progress)."""
import io

from nas.search.progress import TrialProgress, progress_for_terminal


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_status_line_names_trial_rung_epochs_and_seed_repeats():
    out = _Terminal()
    line = TrialProgress(7, [1.0, 3.0], 100, out)
    for step in (10, 20, 30):  # 30 steps in all: rung 1 ends at step 10
        line(step, 30, 1.0)
    line.start(5)  # a front candidate's second training, with seed 5
    line(10, 30, 1.0)
    line(30, 30, 1.0)
    line.close()
    text = out.getvalue()
    assert "trial 7 rung 1/2 epoch 1.00/3" in text and "trial 7 rung 2/2 epoch 2.00/3" in text
    assert "trial 7 seed 5 rung 1/2 epoch 1.00/3" in text and "trial 7 seed 5 rung 2/2 epoch 3.00/3" in text
    assert "img/s" in text and "ETA" in text
    assert text.endswith("\r")  # cleared: the trial's own line goes where the status line was
    assert line.bar is None and line.trainings == 2


def test_no_status_line_off_a_terminal():
    assert progress_for_terminal([1.0], 128, io.StringIO()) is None
    assert progress_for_terminal([1.0], 128, _Terminal()) is not None
