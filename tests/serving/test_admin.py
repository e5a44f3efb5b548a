"""The admin token and its check, without a server (the HTTP tests start one with a token; this covers
the server started without one)."""

import pytest
from fastapi import HTTPException

from moe_unlearn import UserError
from moe_unlearn.serving.admin import ADMIN_TOKEN_ENV, bearer, load_admin_token
from moe_unlearn.serving.limits import Checked, check_body, describe

TOKEN = "s3cret-admin-token-0123456789"


def refused(check, header) -> HTTPException:
    with pytest.raises(HTTPException) as e:
        check(authorization=header)
    return e.value


def test_without_a_token_admin_routes_answer_403_and_say_why():
    e = refused(bearer(None), f"Bearer {TOKEN}")
    assert e.status_code == 403 and ADMIN_TOKEN_ENV in e.detail and "--admin-token-file" in e.detail


def test_the_bearer_token_is_required_and_must_match():
    check = bearer(TOKEN)
    missing = refused(check, None)
    assert missing.status_code == 401 and missing.headers == {"WWW-Authenticate": "Bearer"}
    assert refused(check, "Bearer wrong-token-wrong-token").status_code == 403
    assert refused(check, f"Basic {TOKEN}").status_code == 403
    assert refused(check, TOKEN).status_code == 403
    assert check(authorization=f"Bearer {TOKEN}") is None
    assert check(authorization=f"bearer  {TOKEN} ") is None


def test_token_from_file_then_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert load_admin_token(None) is None
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    assert load_admin_token(None) == TOKEN
    path = tmp_path / "token"
    path.write_text("file-token-0123456789abcdef\n")
    assert load_admin_token(path) == "file-token-0123456789abcdef"  # the file wins
    for bad in ("", "short", "has a space in it 0123456789"):
        path.write_text(bad)
        with pytest.raises(UserError, match="at least 16 characters"):
            load_admin_token(path)
    with pytest.raises(UserError, match="cannot read the admin token file"):
        load_admin_token(tmp_path / "missing")


def test_body_checks_and_error_lines():
    rule = Checked("prompt", 10, "max_new_bytes", 5)
    assert check_body(b'{"prompt": "0123456789"}', rule) is None
    assert check_body('{"prompt": "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}'.encode(), rule)[0] == 413  # 12 bytes
    assert check_body(b'{"prompt": ["01234567890"]}', rule)[0] == 413
    assert check_body(b'{"prompt": "x", "max_new_bytes": 6}', rule)[0] == 422
    assert check_body(b'{"prompt": "x", "max_new_bytes": true}', rule) is None  # a type error: FastAPI's
    assert check_body(b'{"prompt": "x"', rule) is None  # malformed: FastAPI's, with the offset
    assert check_body(b'{"prompt": "\xff"}', rule) == (400, "request body is not valid UTF-8 (bad byte at offset 12)")
    lone = (422, "prompt is not valid Unicode (a lone surrogate at character 1)")
    assert check_body(b'{"prompt": "a\\ud800"}', rule) == lone  # would fail the whole batch in a worker
    assert check_body(b'{"prompt": ["a\\udfff"]}', rule) == lone
    assert check_body(b'{"prompt": "\\ud83d\\ude00"}', rule) is None  # a surrogate pair is one character
    deep = b"[" * 100_000 + b"]" * 100_000
    assert check_body(deep, rule) == check_body(deep, None) == (400, "request body is JSON nested too deeply")
    errors = [
        {"type": "missing", "loc": ("body", "prompt"), "msg": "Field required"},
        {"type": "int_type", "loc": ("body", "seed"), "msg": "Input should be a valid integer", "input": "secret"},
    ]
    assert describe(errors) == "missing field prompt; seed: Input should be a valid integer"
