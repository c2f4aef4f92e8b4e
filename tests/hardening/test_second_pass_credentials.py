"""API_KEY and ADMIN_TOKEN as given (second attack pass): an empty or blank value is refused at
start, a key file's trailing newline is removed with a warning, a key no client can send is
refused; an empty secret that gets past Settings still matches no bearer token."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from service.__main__ import main
from service.app import create_app
from service.http import bearer_matches
from service.settings import Settings
from tests.support import ServerProcess

KEY = "second-pass-key_0123+/="
TOKEN = "second-pass-admin~token"
FIELDS = ["api_key", "admin_token"]
BLANK = ["", " ", "\n", "\r\n", "\t \n"]
UNSENDABLE = ["a b", "a\tb", "a\nb", "a\x00b", "a\x1bb", "a\x7fb", "clé", "\ufeffkey", "a\u00a0b"]


def settings(**values: object) -> Settings:
    return Settings(artifacts_dir=Path("unused"), **values)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", BLANK, ids=repr)
def test_an_empty_or_blank_secret_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**{field: value})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert "empty or only whitespace" in error["msg"]
    assert f"unset {field.upper()}" in error["msg"]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", UNSENDABLE, ids=repr)
def test_a_secret_no_client_can_send_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**{field: value})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert "visible ASCII" in error["msg"]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("around", [("", "\n"), ("", "\r\n"), (" ", " "), ("\t", "\n\n")], ids=repr)
def test_whitespace_around_a_secret_is_removed_with_a_warning(
    field: str, around: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.settings"):
        secret = getattr(settings(**{field: around[0] + KEY + around[1]}), field)
    assert secret.get_secret_value() == KEY
    (record,) = [r for r in caplog.records if r.name == "service.settings"]
    assert record.levelno == logging.WARNING
    assert field.upper() in record.getMessage() and "removed" in record.getMessage()
    assert KEY not in caplog.text


@pytest.mark.parametrize("field", FIELDS)
def test_a_clean_secret_is_kept_as_given_without_a_warning(
    field: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="service.settings"):
        assert getattr(settings(**{field: KEY}), field).get_secret_value() == KEY
        assert getattr(settings(**{field: SecretStr(KEY)}), field).get_secret_value() == KEY
        assert getattr(settings(), field) is None
    assert not [r for r in caplog.records if r.name == "service.settings"]


def test_the_environment_is_read_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", KEY + "\n")
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN + "\r\n")
    read = Settings()
    assert read.api_key is not None and read.api_key.get_secret_value() == KEY
    assert read.admin_token is not None and read.admin_token.get_secret_value() == TOKEN
    monkeypatch.setenv("API_KEY", "")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer ", "Bearer  ", "bearer \t"])
def test_an_empty_secret_matches_no_bearer(authorization: str) -> None:
    assert not bearer_matches(authorization, SecretStr(""))


def test_bearer_matches_the_key_only() -> None:
    secret = SecretStr(KEY)
    assert bearer_matches(f"Bearer {KEY}", secret)
    assert bearer_matches(f"bearer  {KEY} ", secret)
    assert not bearer_matches(f"Bearer {KEY}x", secret)
    assert not bearer_matches(f"Bearer {KEY[:-1]}", secret)
    assert not bearer_matches(KEY, secret)


def test_empty_secrets_past_validation_fail_closed(tmp_path: Path) -> None:
    """Settings built around the validation (model_copy, model_construct): an empty API_KEY
    refuses every prediction, an empty ADMIN_TOKEN keeps the admin routes shut."""
    empty = Settings(artifacts_dir=tmp_path).model_copy(
        update={"api_key": SecretStr(""), "admin_token": SecretStr("")}
    )
    with TestClient(create_app(empty)) as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
            predicted = client.post("/predict", json={"instances": [[1.0]]}, headers=headers)
            assert predicted.status_code == 401
            assert client.post("/admin/reload", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        ({"API_KEY": ""}, ["API_KEY"]),
        ({"ADMIN_TOKEN": " \n"}, ["ADMIN_TOKEN"]),
        ({"API_KEY": "not so secret", "PORT": "eighty"}, ["API_KEY", "PORT"]),
    ],
)
def test_main_exits_2_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    names: list[str],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ")
    for name in names:
        assert f"{name}: " in line
    assert "not so secret" not in line  # a refused secret is not echoed


@pytest.mark.slow  # starts a server process
def test_the_process_refuses_an_empty_api_key(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess(tmp_path, log_path=log, api_key="").start(wait=None)
    assert server.process is not None
    assert server.process.wait(timeout=60) == 2
    (line,) = log.read_text().splitlines()
    assert line.startswith("error: API_KEY: empty or only whitespace")


@pytest.mark.slow  # starts a server process
def test_the_process_accepts_a_key_given_with_a_trailing_newline(tmp_path: Path) -> None:
    """``API_KEY=$(cat keyfile)`` keeps nothing of the newline, but a Secret made from a file
    does: the process serves the key without it, and says so once, without the key."""
    log = tmp_path / "server.log"
    with ServerProcess(
        tmp_path, log_path=log, api_key=KEY + "\n", admin_token=TOKEN + "\r\n"
    ) as server:
        url = server.url
        body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
        wrong = httpx.post(url + "/predict", json=body, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        with_newline = {"Authorization": f"Bearer {KEY}\n"}
        with pytest.raises(httpx.LocalProtocolError):  # no client can send it: hence the strip
            httpx.post(url + "/predict", json=body, headers=with_newline)
        right = httpx.post(url + "/predict", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert right.status_code == 503, right.text  # past the key; no model to answer yet
        admin = httpx.post(url + "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert admin.status_code not in (401, 403), admin.text
        assert (
            httpx.post(url + "/admin/reload", headers={"Authorization": "Bearer"}).status_code
            == 401
        )
    assert server.process is not None and server.process.returncode == 0, server.log()
    text = log.read_text()
    assert KEY not in text and TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line["logger"] == "service.settings"]
    assert [line["level"] for line in warned] == ["warning", "warning"], text
    assert "API_KEY" in warned[0]["message"] and "ADMIN_TOKEN" in warned[1]["message"]
