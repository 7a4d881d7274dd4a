"""`llava-hf` command line: convert, help, exit codes."""

import subprocess
import sys

from fixtures.tester import LlavaModelTester
from llava_hf.cli import main


def test_convert_command_round_trip(tmp_path, capsys):
    LlavaModelTester().save(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf-llava"]) == 0
    assert "(llava_hf) ->" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "model.safetensors").is_file()


def test_convert_failure_exits_non_zero_with_the_reason(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_help_shows_an_example():
    result = subprocess.run(
        [sys.executable, "-m", "llava_hf.cli", "convert", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "llava-hf convert llava-1.5-7b-hf/" in result.stdout
