"""`serve` as a command: its help, and mistakes that stop it before it starts (one line, exit code 2)."""

import socket

from typer.testing import CliRunner

from moe_unlearn.rundir import read_current, version_dir
from moe_unlearn.serving.command import app


def invoke(*args):
    return CliRunner().invoke(app(), [str(a) for a in args], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def test_help_names_the_routes_and_options():
    out = invoke("--help").stdout
    for word in ("/generate", "/score", "/v1/completions", "/admin/forget", "--max-batch-size", "--admin-token-file"):
        assert word in out


def test_nothing_to_serve(tmp_path):
    result = invoke("--run-dir", tmp_path / "nope")
    assert result.exit_code == 2 and "error: no run directory at" in result.stderr


def test_bad_host_port_and_token_file(tiny_run_dir, tmp_path):
    result = invoke("--run-dir", tiny_run_dir, "--host", "10.1.2.3")
    assert result.exit_code == 2 and "host must be one of 127.0.0.1, 0.0.0.0, ::" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("--run-dir", tiny_run_dir, "--port", taken.getsockname()[1])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1 port" in result.stderr
    (tmp_path / "token").write_text("short")
    result = invoke("--run-dir", tiny_run_dir, "--admin-token-file", tmp_path / "token")
    assert result.exit_code == 2 and "at least 16 characters" in result.stderr


def test_a_corrupt_version_stops_serve_with_one_line(tiny_copy):
    damaged = next((version_dir(tiny_copy, read_current(tiny_copy)) / "experts").glob("*.safetensors"))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = invoke("--run-dir", tiny_copy)
    assert result.exit_code == 2 and "corrupt model file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
