"""The shared propagate_to allow-list."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_core import HostAllowList, host_of, resolve_propagate_to
from session_core.hosts import normalize_host


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


# An internationalised name reaches the allow-list in either form: requests sends (and reports) the IDNA ASCII
# form, httpx reports the Unicode one (``request.url.host``) while it sends the ASCII one.
BUECHER = ("bücher.example", "xn--bcher-kva.example", "BÜCHER.Example.")


@pytest.mark.parametrize("entry", BUECHER)
@pytest.mark.parametrize("host", BUECHER)
def test_internationalised_names_match_in_either_form(entry, host):
    assert HostAllowList([entry]).allows(host)
    assert HostAllowList([entry]).allows_url(f"http://{host}:8080/v1")
    assert HostAllowList([f"*.{entry}"]).allows(f"api.{host}")
    assert not HostAllowList([f"*.{entry}"]).allows(host)  # a wildcard still leaves the name itself out
    assert not HostAllowList([entry]).allows(f"x{host}")


def test_internationalised_names_normalise_to_their_ascii_form():
    assert normalize_host("BÜCHER.example.") == "xn--bcher-kva.example"
    assert normalize_host("ü.") == "xn--tda" and normalize_host("[bücher.example]") == "xn--bcher-kva.example"
    assert (
        host_of("https://bücher.example/v1") == host_of("https://xn--bcher-kva.example/v1") == "xn--bcher-kva.example"
    )
    assert resolve_propagate_to(["*.Bücher.example", "xn--bcher-kva.example"]) == (
        "*.xn--bcher-kva.example",
        "xn--bcher-kva.example",
    )
    assert HostAllowList(["*.example"]).allows("bücher.example") and HostAllowList(["*.example"]).allows(
        "xn--bcher-kva.example"
    )
    assert not HostAllowList(["bücher.example"]).allows("bucher.example")


def test_names_whose_idna_forms_disagree_match_only_as_written():
    """IDNA 2003 (the stdlib codec, urllib) reads straße.de as strasse.de; IDNA 2008 (requests, httpx) as
    xn--strae-oqa.de, another domain: equating either would send session data to a host nobody allowed."""
    assert HostAllowList(["straße.de"]).allows("straße.de")
    assert not HostAllowList(["strasse.de"]).allows("straße.de")
    assert not HostAllowList(["straße.de"]).allows("strasse.de")


@pytest.mark.parametrize(
    "host",
    [
        "ü" * 70 + ".example",
        "caf\udce9.example",
        "xn--ü.example",
        "\u3002ü",
        "bücher\u3002example",
        "ﬁ.example",
        "ü" * 64,
    ],
)
def test_names_idna_cannot_encode_stay_as_they_are_and_never_raise(host):
    normalized = normalize_host(host)
    assert normalized == host.strip().lower().rstrip(".")
    assert HostAllowList([normalized]).allows(host)  # they still match themselves
    assert not HostAllowList(["bücher.example", "*.bücher.example"]).allows(host)
    assert host_of(f"http://{host}/") in (None, normalized)


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_normalising_any_text_never_raises(text):
    assert isinstance(normalize_host(text), str)
    HostAllowList(["bücher.example", "*.xn--bcher-kva.example"]).allows(text)
    host_of(f"http://{text}/")
