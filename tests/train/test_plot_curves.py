"""train/plot_curves.py: every bad log or output path is one stderr line and exit 2, no traceback."""
import json
import os
import subprocess
import sys

import pytest

from mxcnn.train import plot_curves

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                              reason="root ignores file modes")
GOOD = [{"epoch": 1, "train_error": 0.6, "val_error": 0.55},
        {"epoch": 2, "train_error": 0.4, "val_error": None}]


def _scratch(tmp_path):
    """{tmp}/good-log.jsonl, logs of the wrong content, and a read-only folder."""
    def log(name, lines):
        (tmp_path / name).write_text("".join(line + "\n" for line in lines))
    log("good-log.jsonl", [json.dumps(r) for r in GOOD])
    log("lists-log.jsonl", ["[1, 2]"])
    log("noepoch-log.jsonl", ['{"val_error": 0.5}'])
    log("text-log.jsonl", [json.dumps(GOOD[0]), '{"epoch": 2, "val_error": "high"}'])
    log("broken-log.jsonl", ['{"epoch": 1,'])
    log("empty-log.jsonl", [])
    (tmp_path / "binary-log.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "two").mkdir()
    for name in ("a-log.jsonl", "b-log.jsonl"):
        (tmp_path / "two" / name).write_text(json.dumps(GOOD[0]) + "\n")
    (tmp_path / "ro").mkdir()
    os.chmod(str(tmp_path / "ro"), 0o555)


def _one_line_error(capsys, argv, tmp_path):
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    code = plot_curves.main([fill(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (argv, captured)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("plot_curves.py: error: "), err
    assert not [p for p in os.listdir(str(tmp_path)) if p.endswith(".tmp")]
    return err, fill


# (case, argv with {tmp}, fragment of the one stderr line).  Each raised a traceback before.
HOSTILE = [
    ("output under a regular file", ["{tmp}/good-log.jsonl", "-o", "/etc/passwd/c.png"],
     "cannot write /etc/passwd/c.png: /etc/passwd is a file, not a folder"),
    ("output is a folder", ["{tmp}/good-log.jsonl", "-o", "{tmp}"], "it is a folder"),
    ("empty output name", ["{tmp}/good-log.jsonl", "-o", ""], "does not name a file"),
    pytest.param("output folder refuses new files", ["{tmp}/good-log.jsonl", "-o", "/sys/c.png"],
                 "cannot write /sys/c.png: ",
                 marks=pytest.mark.skipif(not os.path.isdir("/sys"), reason="no /sys")),
    pytest.param("read-only output folder", ["{tmp}/good-log.jsonl", "-o", "{tmp}/ro/c.png"],
                 "cannot write {tmp}/ro/c.png: Permission denied", marks=_AS_ROOT),
    ("log of lists", ["{tmp}/lists-log.jsonl"], "lists-log.jsonl: record 1 is not a training-log epoch"),
    ("record without epoch", ["{tmp}/noepoch-log.jsonl"], "noepoch-log.jsonl: record 1 is not"),
    ("error that is text", ["{tmp}/text-log.jsonl"], "text-log.jsonl: record 2 is not"),
]

# Handled before the fix too; kept here so that the move to UserError cannot lose them.
STILL_CLEAN = [
    ("missing log", ["{tmp}/nothing-log.jsonl"], "no training log at {tmp}/nothing-log.jsonl"),
    ("log not JSON", ["{tmp}/broken-log.jsonl"], "cannot read {tmp}/broken-log.jsonl"),
    ("log not text", ["{tmp}/binary-log.jsonl"], "cannot read {tmp}/binary-log.jsonl"),
    ("log without epochs", ["{tmp}/empty-log.jsonl"], "empty-log.jsonl has no epochs yet"),
    ("folder of several logs", ["{tmp}/two"], "holds several logs"),
    ("labels do not match", ["{tmp}/good-log.jsonl", "--labels", "a,b"], "--labels has 2 names for 1 runs"),
]


def _ids(table):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in table]


@pytest.mark.parametrize("case,argv,fragment", HOSTILE + STILL_CLEAN, ids=_ids(HOSTILE + STILL_CLEAN))
def test_bad_input_is_one_line(tmp_path, capsys, case, argv, fragment):
    _scratch(tmp_path)
    err, fill = _one_line_error(capsys, argv + ["-o", "{tmp}/c.png"] if "-o" not in argv else argv,
                                tmp_path)
    assert fill(fragment) in err, err
    assert not (tmp_path / "c.png").exists()


def test_missing_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    _scratch(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    err, _ = _one_line_error(capsys, ["{tmp}/good-log.jsonl", "-o", "{tmp}/c.png"], tmp_path)
    assert "plotting needs matplotlib" in err


def test_good_logs_are_plotted(tmp_path, capsys):
    _scratch(tmp_path)
    out = tmp_path / "new" / "c.png"  # a missing folder is made
    assert plot_curves.main([str(tmp_path / "good-log.jsonl"), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "good: 2 epochs, final val error 55.00%" in capsys.readouterr().out


def test_script_refuses_an_output_under_a_file(tmp_path):
    """The issue's command, run as a script."""
    _scratch(tmp_path)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train", "plot_curves.py"),
                           str(tmp_path / "good-log.jsonl"), "-o", "/etc/passwd/c.png"],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "plot_curves.py: error: cannot write /etc/passwd/c.png: /etc/passwd is a file, not a "
        "folder; choose another path"], proc.stderr
