"""One configuration, three ways in: ``python -m app`` flags over POOLSERVE_* variables over
``.env`` over defaults, checked on real processes (``--help``, ``--print-settings``, and a
server with two workers whose limit came from the flag)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from bench.server import free_port
from tests.app_process import children, clean_environment, environ_of, run_app, served

ROOT = Path(__file__).resolve().parents[1]


def _printed(args: list[str], cwd: Path, **env: str) -> dict[str, Any]:
    result = run_app([*args, "--print-settings"], clean_environment(**env), cwd)
    assert result.returncode == 0, result.stderr
    values: dict[str, Any] = json.loads(result.stdout)
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_help_lists_every_setting_with_its_variable_and_description(tmp_path: Path) -> None:
    result = run_app(["--help"], clean_environment(), tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name, field in Settings.model_fields.items():
        assert f"{_flag(name)} " in text, name
        assert f"POOLSERVE_{name.upper()}" in text, name
        assert " ".join(str(field.description).split()) in text, name
    assert "Settings.<lambda>" not in text, "a factory default is shown by its value"
    assert "(default: CUDAExecutionProvider,CPUExecutionProvider)" in text


def test_an_unknown_flag_is_an_error_and_nothing_is_served(tmp_path: Path) -> None:
    port = free_port()
    result = run_app(["--port", str(port), "--bogus"], clean_environment(), tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "99999"], {}, "port"),
        ([], {"POOLSERVE_MAX_IMAGES": "0"}, "max_images"),
        (["--log-level", "loud"], {}, "log_level"),
    ],
)
def test_a_bad_value_exits_2_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_app(args, clean_environment(**env), tmp_path)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_flag_over_environment_over_dotenv_over_default(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "POOLSERVE_MAX_IMAGES=5\nPOOLSERVE_MAX_WAITING=7\nPOOLSERVE_MAX_BATCH_SIZE=3\n"
        "# a comment\nPOOLSERVE_INTRA_OP_THREADS=\n"
    )
    values = _printed(
        ["--max-images", "4"],
        tmp_path,
        POOLSERVE_MAX_IMAGES="6",
        POOLSERVE_MAX_WAITING="8",
    )
    assert values["max_images"] == 4  # flag, environment and .env: the flag
    assert values["max_waiting"] == 8  # environment and .env: the environment
    assert values["max_batch_size"] == 3  # .env only
    assert values["max_queue_size"] == 64  # nowhere: the default
    assert values["intra_op_threads"] is None  # empty means the default


def test_a_named_env_file_replaces_dotenv_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("POOLSERVE_MAX_IMAGES=5\n")
    named = tmp_path / "prod.env"
    named.write_text("POOLSERVE_MAX_IMAGES=9\n")
    assert _printed([], tmp_path, POOLSERVE_ENV_FILE=str(named))["max_images"] == 9
    missing = run_app([], clean_environment(POOLSERVE_ENV_FILE=str(tmp_path / "no.env")), tmp_path)
    assert missing.returncode == 2
    assert "POOLSERVE_ENV_FILE" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--models", "a,b"],
        ["--models", '["a", "b"]'],
        ["--models", "a", "--models", "b"],
    ],
)
def test_list_flags_take_comma_json_or_repeated_values(tmp_path: Path, args: list[str]) -> None:
    assert _printed(args, tmp_path)["models"] == ["a", "b"]


def test_bool_flags_and_null(tmp_path: Path) -> None:
    values = _printed(
        ["--no-io-binding", "--jpeg-draft", "--batching", "true", "--intra-op-threads", "null"],
        tmp_path,
        POOLSERVE_INTRA_OP_THREADS="3",
    )
    assert values["io_binding"] is False
    assert values["jpeg_draft"] is True
    assert values["batching"] is True
    assert values["intra_op_threads"] is None  # the flag's null beats the environment's 3


def test_printed_settings_hide_api_keys(tmp_path: Path) -> None:
    result = run_app(
        ["--api-keys", "s3cret-one,s3cret-two", "--print-settings"], clean_environment(), tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert json.loads(result.stdout)["api_keys"] == ["***", "***"]


def _post(port: int, size: int) -> int:
    """A (malformed) .npy body of ``size`` bytes on a fresh connection; the status code."""
    body = b"x" * size
    request = (
        f"POST /pool?op=max HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request + body)
        status = sock.recv(64).split(b" ", 2)[1]
    return int(status)


@pytest.mark.slow
def test_two_workers_serve_with_the_flag_over_env_and_dotenv(
    app_repository: Path, tmp_path: Path
) -> None:
    # max_body_bytes: .env 1000, environment 2000, flag 3000; a 2500-byte body passes only
    # the flag's limit (then fails as .npy, 4xx but not 413), a 3500-byte one none.
    (tmp_path / ".env").write_text("POOLSERVE_MAX_BODY_BYTES=1000\n")
    port = free_port()
    env = clean_environment(
        POOLSERVE_MAX_BODY_BYTES="2000",
        POOLSERVE_MODEL_REPOSITORY=str(app_repository),
        POOLSERVE_MODELS="netvlad_head",
        POOLSERVE_PROVIDERS="CPUExecutionProvider",
        POOLSERVE_LOG_LEVEL="warning",
    )
    args = ["--port", str(port), "--workers", "2", "--max-body-bytes", "3000"]
    with served(args, env, tmp_path, port) as server:
        workers = [pid for pid in children(server.pid) if _is_worker(pid)]
        assert len(workers) == 2
        for pid in workers:  # each worker rebuilt its settings from the exported flag
            assert environ_of(pid)["POOLSERVE_MAX_BODY_BYTES"] == "3000"
        for _ in range(12):  # fresh connections: both workers take some
            passed = _post(port, 2500)
            assert 400 <= passed < 500, passed
            assert passed != 413
            assert _post(port, 3500) == 413


def _is_worker(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return b"spawn_main" in cmdline and b"resource_tracker" not in cmdline


def test_the_readme_documents_the_precedence() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"flag.{0,40}environment.{0,40}`\.env`.{0,40}default", readme, re.S)
    assert "python -m app --help" in readme


def test_python_m_app_without_flags_still_reads_the_environment(tmp_path: Path) -> None:
    values = _printed([], tmp_path, POOLSERVE_PORT="8135", POOLSERVE_MODELS="a,b")
    assert values["port"] == 8135
    assert values["models"] == ["a", "b"]


def test_env_example_uncommented_is_the_defaults(tmp_path: Path) -> None:
    # Every line of .env.example, uncommented, must parse and change nothing.
    lines = (ROOT / ".env.example").read_text().splitlines()
    settings = [line[2:] for line in lines if re.match(r"# POOLSERVE_[A-Z_]+=", line)]
    assert len(settings) == len(Settings.model_fields)
    (tmp_path / ".env").write_text("\n".join(settings) + "\n")
    assert _printed([], tmp_path) == _printed([], tmp_path / "..")
    assert _printed([], tmp_path)["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
