"""Secrets at rest: Fernet tokens under a 0600 key file, and the agent's encrypted BMC password."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import pytest

from dpustack.agent.config import parse_config
from dpustack.errors import InvalidInput
from dpustack.secrets import SecretError, decrypt, default_key_file, encrypt

SECRET = "bmc-Pa55word!"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_comes_back_from_its_token_and_the_key_file_is_created_private(tmp_path):
    key_file = tmp_path / "keys" / "secret.key"

    token = encrypt(SECRET, key_file=key_file)

    assert decrypt(token, key_file=key_file) == SECRET
    assert SECRET not in token
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]  # no temporary file left


def test_the_key_is_made_once_and_reused(tmp_path):
    key_file = tmp_path / "secret.key"
    first = encrypt(SECRET, key_file=key_file)
    key = key_file.read_bytes()

    second = encrypt(SECRET, key_file=key_file)

    assert key_file.read_bytes() == key
    assert first != second  # every token has its own IV and time stamp
    assert decrypt(first, key_file=key_file) == decrypt(second, key_file=key_file) == SECRET


def test_threads_racing_to_create_the_key_all_use_the_same_one(tmp_path):
    key_file = tmp_path / "secret.key"
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(encrypt(SECRET, key_file=key_file)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [decrypt(token, key_file=key_file) for token in tokens] == [SECRET] * 8


def test_a_token_made_with_another_key_is_refused_naming_the_key_not_the_secret(tmp_path):
    token = encrypt(SECRET, key_file=tmp_path / "a.key")
    encrypt("other", key_file=tmp_path / "b.key")

    with pytest.raises(SecretError) as caught:
        decrypt(token, key_file=tmp_path / "b.key")

    assert str(tmp_path / "b.key") in caught.value.message
    assert SECRET not in caught.value.message and token not in caught.value.message


def test_a_damaged_token_is_refused(tmp_path):
    token = encrypt(SECRET, key_file=tmp_path / "secret.key")

    with pytest.raises(SecretError, match="damaged"):
        decrypt(token[:-6] + "AAAAAA", key_file=tmp_path / "secret.key")


def test_decrypting_never_creates_a_key(tmp_path):
    with pytest.raises(SecretError, match="no secret key file"):
        decrypt("gAAAA", key_file=tmp_path / "missing.key")

    assert not (tmp_path / "missing.key").exists()


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key_file = tmp_path / "secret.key"
    token = encrypt(SECRET, key_file=key_file)
    key_file.chmod(0o644)

    with pytest.raises(SecretError, match=f"chmod 600 {key_file}"):
        decrypt(token, key_file=key_file)


def test_the_default_key_file_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DPUSTACK_SECRET_KEY_FILE", raising=False)
    monkeypatch.setenv("DPUSTACK_HOME", str(tmp_path / "home"))
    assert default_key_file() == tmp_path / "home" / "secret.key"

    monkeypatch.setenv("DPUSTACK_SECRET_KEY_FILE", str(tmp_path / "explicit.key"))
    assert decrypt(encrypt(SECRET)) == SECRET
    assert (tmp_path / "explicit.key").exists()


# -- the agent's [bmc] password ---------------------------------------------------------------

def _config(tmp_path: Path, **bmc):
    return parse_config({"state_dir": str(tmp_path / "state"), "insecure": True,
                         "api": {"controller_credential_sha256": "0" * 64},
                         "controller": {"url": "http://127.0.0.1:9", "token": "c"}, "bmc": bmc})


def test_the_agent_decrypts_password_encrypted_with_a_key_file_relative_to_its_state_dir(tmp_path):
    (tmp_path / "state").mkdir()
    token = encrypt(SECRET, key_file=tmp_path / "state" / "bmc.key")

    config = _config(tmp_path, password_encrypted=token, secret_key_file="bmc.key")

    assert config.bmc.login_password.get_secret_value() == SECRET
    assert config.bmc.secret_key_file == tmp_path / "state" / "bmc.key"
    assert SECRET not in repr(config) and token not in repr(config)


def test_a_plain_password_still_works_but_is_warned_about_without_showing_it(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dpustack.agent.config"):
        config = _config(tmp_path, password=SECRET)

    assert config.bmc.login_password.get_secret_value() == SECRET
    assert "[bmc] password is stored in plain text" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("bmc, field, text", [
    ({"password_encrypted": "gAAAA"}, "bmc.secret_key_file", "required to decrypt password_encrypted"),
    ({"password_encrypted": "gAAAA", "password": "x", "secret_key_file": "/k"}, "bmc.password", "not both"),
    ({"password_encrypted": "gAAAA", "secret_key_file": "/nonexistent/k"}, "bmc.password_encrypted",
     "no secret key file at /nonexistent/k"),
])
def test_a_bad_password_setting_fails_naming_its_field(tmp_path, bmc, field, text):
    with pytest.raises(InvalidInput) as caught:
        _config(tmp_path, **bmc)

    assert caught.value.field == field
    assert caught.value.message.startswith(f"agent.toml: {field}: ") and text in caught.value.message


def test_a_token_from_another_key_fails_at_start_naming_the_field_not_the_secret(tmp_path):
    token = encrypt(SECRET, key_file=tmp_path / "old.key")
    encrypt("x", key_file=tmp_path / "new.key")

    with pytest.raises(InvalidInput) as caught:
        _config(tmp_path, password_encrypted=token, secret_key_file=str(tmp_path / "new.key"))

    assert caught.value.field == "bmc.password_encrypted"
    assert SECRET not in caught.value.message
