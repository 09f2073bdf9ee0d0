"""ourvidz.redact: no password, token, key or signature from a Redis or callback URL reaches a message."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourvidz.redact import is_secret_name, mask_text, mask_url, url_secrets


@pytest.mark.parametrize("url,masked", [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://app:hunter2@db:6379/0", "redis://app:***@db:6379/0"),
    ("rediss://:hunter2@db/0", "rediss://:***@db/0"),
    ("redis://default@db", "redis://***@db"),
    ("redis://u:p@ss@db:6379", "redis://u:***@db:6379"),  # an unencoded @ in the password
    ("https://u:p@h/to/@me", "https://u:***@me"),  # over-masked: the safe mistake
    ("redis://u:123/abc@db", "redis://u:***@db"),
    ("redis://:000?@db", "redis://:***@db"),
    ("redis://u:pa/ss@db:6379/0", "redis://u:***@db:6379/0"),  # an unencoded '/' in the password
    ("unix://u:hunter2@/run/redis.sock?db=0", "unix://u:***@/run/redis.sock?db=0"),
    ("redis://db:6379/0?password=hunter2&db=1", "redis://db:6379/0?password=***&db=1"),
    ("https://ghp_abcdef@host/x", "https://***@host/x"),
    ("https://h/cb?job=1&token=abc", "https://h/cb?job=1&token=***"),
    ("https://h/cb?key=abc&secret=def&api_key=g&apiKey=h&access_token=i&client_secret=j",
     "https://h/cb?key=***&secret=***&api_key=***&apiKey=***&access_token=***&client_secret=***"),
    ("https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F2024&X-Amz-Security-Token=t"
     "&X-Amz-Signature=f00d&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&X-Amz-Security-Token=***"
     "&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://acct.blob.core.windows.net/c/b?sv=2022&sig=abc%2Bdef", "https://acct.blob.core.windows.net/c/b?sv=2022&sig=***"),
    ("https://h/cb?X%2DAmz%2DSignature=abc", "https://h/cb?X%2DAmz%2DSignature=***"),
    ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=1"),
    ("https://u:p@h/cb?token=t#id_token=x", "https://u:***@h/cb?token=***#id_token=***"),
    ("http://[::1]:8080/@me?q=1", "http://[::1]:8080/@me?q=1"),
    ("https://h/users/@me", "https://h/users/@me"),
    ("https://h/cb?token=", "https://h/cb?token="),
    ("http://[bad", "http://[bad"),
    ("not a url ?password=x", "not a url ?password=***"),
    ("", ""),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_secret_names():
    for name in ("password", "PASSWD", "token", "access_token", "api-key", "X-Amz-Signature", "sig", "auth",
                 "Authorization", "client_secret", "sessionid"):
        assert is_secret_name(name), name
    for name in ("db", "job", "id", "state", "X-Amz-Expires", "sv"):
        assert not is_secret_name(name), name


def test_url_secrets_lists_what_mask_url_hides():
    assert url_secrets("redis://app:hunter%402@db/0?password=pw2&db=1") == ["hunter%402", "hunter@2", "pw2"]
    assert url_secrets("https://tok@h/") == ["tok"]
    assert url_secrets("https://h/cb?job=1") == []
    assert url_secrets(None) == []


def test_mask_text_removes_known_secrets_in_any_form():
    secrets = url_secrets("redis://app:p@ss/w0rd@db:6379/0") + ["sk-live-123456"]
    message = ("cannot reach Redis at redis://app:p@ss/w0rd@db:6379/0: AUTH p@ss/w0rd failed; "
               "encoded p%40ss%2Fw0rd; callback https://h/cb?token=sk-live-123456 -> HTTP 500")
    out = mask_text(message, secrets)
    assert "p@ss" not in out and "w0rd" not in out and "sk-live" not in out
    assert out == ("cannot reach Redis at redis://app:***@db:6379/0: AUTH *** failed; "
                   "encoded ***; callback https://h/cb?token=*** -> HTTP 500")


def test_mask_text_masks_urls_without_being_told_and_leaves_short_secrets():
    assert mask_text("posting to https://u:pw@h/x?api_key=k failed") == "posting to https://u:***@h/x?api_key=*** failed"
    assert mask_text("a cat and a bat", ["at"]) == "a cat and a bat"
    assert mask_text("a cat", ["at"], min_len=1) == "a c***"
    assert mask_text("nothing", [None, ""]) == "nothing"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(user=st.text(alphabet=st.characters(blacklist_characters=":/?#@", blacklist_categories=("Cs",)), max_size=8),
       password=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=16),
       host=st.sampled_from(["db", "db:6379", "10.0.0.1:6380", "[::1]:6379"]),
       tail=st.sampled_from(["", "/0", "/0?db=1", "?socket_timeout=5", "#x"]))
def test_no_password_survives(user, password, host, tail):
    url = f"redis://{user}:{password}@{host}{tail}"
    masked = mask_url(url)
    assert masked == f"redis://{user}:***@{host}{tail}" or "@" in password or (set(password) & set("/?#"))
    assert password not in mask_text(f"error at {url}: boom", url_secrets(url))
    assert mask_url(masked) == masked


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_never_raises(text):
    mask_url(text)
    mask_text(text, [text[:5]])
