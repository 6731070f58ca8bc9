"""`jobbridge jobs`: its parameters, its configuration and its exit statuses, without a stack
(tests/e2e/test_cli_e2e.py drives it on one, in a terminal)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from jobbridge_client import cli
from jobbridge_client.config import ConfigError, TokenCommandFailed, load_profile


def test_params_are_strings_or_json_and_flags_add_to_the_file(tmp_path: Path) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text('{"video_id": "from-file", "duration_s": 1}')

    params = cli.parse_params(["video_id=v 1", "duration_s:=2.5", "hdr:=true", "tags:=[1,2]", "eq=a=b"],
                              str(params_file))

    assert params == {"video_id": "v 1", "duration_s": 2.5, "hdr": True, "tags": [1, 2], "eq": "a=b"}
    assert cli.parse_params([], "-", stdin=io.StringIO('{"a": 1}')) == {"a": 1}


@pytest.mark.parametrize("pair", ["novalue", "=v", "n:=not json"])
def test_a_malformed_param_is_a_usage_error(pair: str) -> None:
    with pytest.raises(cli.UsageError, match="--param"):
        cli.parse_params([pair], None)


def test_a_param_file_must_be_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(cli.UsageError, match="JSON object"):
        cli.parse_params([], str(path))


def test_flags_then_environment_then_the_profile_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[default]\napi_url = "http://file"\ntoken_command = "print-token"\n'
                      '[prod]\napi_url = "https://prod"\ntoken = "prod-token"\n')
    env = {"JOBBRIDGE_CONFIG": str(config)}

    default = load_profile(environ=env)
    assert default.api_url == "http://file" and default.token_command == "print-token" and default.token is None
    assert load_profile(profile="prod", environ=env).token_source() == "prod-token"
    assert load_profile(environ={**env, "JOBBRIDGE_PROFILE": "prod"}).api_url == "https://prod"
    from_env = load_profile(environ={**env, "JOBBRIDGE_API_URL": "http://env", "JOBBRIDGE_TOKEN": "t"})
    assert from_env.api_url == "http://env" and from_env.token_source() == "t"
    assert load_profile(api_url="http://flag", environ={**env, "JOBBRIDGE_API_URL": "http://env"}).api_url == "http://flag"
    with pytest.raises(ConfigError, match=r"no profile \[staging\]"):
        load_profile(profile="staging", environ=env)
    with pytest.raises(ConfigError, match="no API URL"):
        load_profile(environ={"JOBBRIDGE_CONFIG": str(tmp_path / "absent.toml")})


def test_the_token_command_is_the_token_provider(tmp_path: Path) -> None:
    env = {"JOBBRIDGE_API_URL": "http://x",
           "JOBBRIDGE_TOKEN_COMMAND": f"{sys.executable} -c \"print('  tok-1  ')\"",
           "JOBBRIDGE_CONFIG": str(tmp_path / "absent.toml")}
    provider = load_profile(environ=env).token_source()
    assert callable(provider) and provider() == "tok-1"

    failing = load_profile(environ={**env, "JOBBRIDGE_TOKEN_COMMAND": f"{sys.executable} -c \"import sys; sys.exit(3)\""})
    with pytest.raises(TokenCommandFailed, match="exit status 3"):
        failing.token_source()()  # type: ignore[operator]


def test_usage_and_configuration_errors_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JOBBRIDGE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("JOBBRIDGE_API_URL", raising=False)

    assert cli.main(["get", "job_x"]) == cli.EXIT_USAGE
    assert "no API URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["frobnicate"])
    assert exited.value.code == cli.EXIT_USAGE


def test_jobbridge_jobs_reaches_the_client_without_the_workshop() -> None:
    import subprocess

    probe = ("import sys, contextlib, io, jobbridge.cli\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    try:\n        jobbridge.cli.main(['jobs', '--help'])\n"
             "    except SystemExit:\n        pass\n"
             "print('exit status' in out.getvalue(), sorted(m for m in sys.modules if m.startswith('jobbridge_local')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "True []", done.stderr
