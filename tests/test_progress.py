"""Progress off a terminal is plain lines, not carriage-return redraws."""
import io

from cbdm_aug.progress import counter


def test_off_a_terminal_progress_is_a_few_plain_lines_without_carriage_returns():
    stream = io.StringIO()
    bar = counter(1000, "generate synth.h5", "img", stream=stream)
    for _ in range(100):
        bar.update(10)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("generate synth.h5: 1000/1000 img (100%)")


def test_a_resumed_count_starts_where_it_was():
    stream = io.StringIO()
    bar = counter(100, "x", stream=stream, initial=90)
    bar.update(10)
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[-1]]
    assert "100/100" in stream.getvalue()
