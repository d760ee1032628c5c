"""The shared propagate_to allow-list."""

from __future__ import annotations

import pytest

from session_core import HostAllowList, host_of, resolve_propagate_to


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.example.com,*.Internal.", ("a.example.com", "*.internal")),
        (["[::1]", "127.0.0.1", "127.0.0.1"], ("::1", "127.0.0.1")),
        ([], ()),
        (["*"], ("*",)),
        (" , ", ()),
    ],
)
def test_resolve(given, expected):
    assert resolve_propagate_to(given) == expected


def test_resolve_env_default(monkeypatch):
    monkeypatch.delenv("SESSION_PROPAGATE_TO", raising=False)
    assert resolve_propagate_to(None) is None
    monkeypatch.setenv("SESSION_PROPAGATE_TO", "api.example.com, *.svc")
    assert resolve_propagate_to(None) == ("api.example.com", "*.svc")
    assert HostAllowList.from_setting().allows("x.svc")


@pytest.mark.parametrize("bad", ["https://a.example.com", "a.example.com:443", "a.*.com", "**", "u@h"])
def test_refuses_urls_ports_and_inner_wildcards(bad):
    with pytest.raises(ValueError, match="propagate_to entry"):
        resolve_propagate_to([bad])


def test_matching():
    f = HostAllowList(["a.example.com", "*.internal", "::1"])
    assert f.allows("A.Example.com.") and f.allows("x.y.internal") and f.allows("[::1]")
    assert not f.allows("internal") and not f.allows("b.example.com") and not f.allows(None)
    assert not f.allows("evilinternal")
    assert f.allows_url("http://[::1]:8080/x") and not f.allows_url("http://evil.example/")
    assert HostAllowList(None).allows(None) and HostAllowList(["*"]).allows("anything")
    assert not HostAllowList([]).allows("a.example.com")
    with pytest.raises(TypeError):
        HostAllowList("a,b")  # type: ignore[arg-type]


def test_host_of():
    assert host_of("https://API.example.com./v1") == "api.example.com"
    assert host_of("http://[::1]:80/") == "::1"
    assert host_of("not a url") is None
    assert host_of("http://[bad") is None
    assert host_of("http://evil.example\\@api.example.com/") is None  # clients disagree on this host
    assert not HostAllowList(["api.example.com"]).allows_url("http://evil.example\\@api.example.com/")
    assert host_of("http://api.example.com/a\\b") == "api.example.com"  # in the path it is no matter
