"""The SSRF guard's decision (`check_url`), tested without sending anything.

Only IP literals and `localhost` appear, and a guard on `socket.getaddrinfo` fails the test if
the decision would look any other name up (there is no network here, and no DNS may leave).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tools.errors import URLRefused
from tools.web import allowed_hosts, check_url, is_global

REFUSED = [
    # schemes other than http(s)
    "file:///etc/passwd", "ftp://example.org/x", "gopher://example.org:70/_x",
    "data:text/html,<h1>hi</h1>", "javascript:alert(1)",
    # loopback
    "http://127.0.0.1/", "http://127.1/", "http://localhost/", "http://[::1]/",
    # private
    "http://10.0.0.1/", "http://10.255.255.254:8080/", "http://172.16.0.1/",
    "http://172.31.255.254/", "http://192.168.0.1/", "http://192.168.255.1:3000/",
    # link-local (cloud metadata) and CGNAT (100.100.100.200 is a cloud metadata address too)
    "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/", "http://100.100.100.200/",
    # IETF protocol assignments, benchmarking, documentation, multicast, reserved, broadcast
    "http://192.0.0.192/", "http://198.18.0.1/", "http://192.0.2.1/", "http://224.0.0.1/",
    "http://240.0.0.1/", "http://255.255.255.255/",
    # IPv4 inside IPv6: 6to4, mapped (both spellings), NAT64, IPv4-compatible, Teredo
    "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/", "http://[64:ff9b::7f00:1]/", "http://[::7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    # IPv6 private, link-local, unspecified
    "http://[fd00::1]/", "http://[fe80::1]/", "http://[::]/",
    # encoded IPv4 (decimal, hex, octal) and the unspecified address
    "http://2130706433/", "http://0x7f000001/", "http://017700000001/", "http://0177.0.0.1/",
    "http://0.0.0.0/", "http://0/",
    # credentials and fragment tricks: the host is what the client connects to
    "http://example.com@127.0.0.1/", "http://127.0.0.1#@example.com/",
    "http://user:pass@example.com/", "http://127.0.0.1%2f@example.com/",
]

# (url, allow-list): allow-listed hosts on other ports, or another scheme's default port
REFUSED_DESPITE_ALLOW = [
    ("http://127.0.0.1:8080/", ["127.0.0.1:8888"]),
    ("http://127.0.0.1:80/internal-admin", ["127.0.0.1:8888"]),
    ("http://127.0.0.1:8888/", ["127.0.0.1"]),
    ("http://127.0.0.1:443/", ["127.0.0.1"]),
    ("http://localhost:9000/", ["localhost:8888"]),
    ("http://[::1]:8081/", ["[::1]:8080"]),
    ("http://127.0.0.2:8888/", ["127.0.0.1:8888"]),
]

ALLOWED = [
    ("http://127.0.0.1:8888/doc/x", ["127.0.0.1:8888"]),
    ("http://127.0.0.1:8888/doc/x", ["http://127.0.0.1:8888"]),  # a URL names its origin
    ("http://LOCALHOST:8888/", ["localhost:8888"]),
    ("http://[::1]:8080/", ["[::1]:8080"]),
    ("http://127.0.0.1/", ["127.0.0.1"]),  # a bare host: http on 80
    ("https://127.0.0.1/", ["127.0.0.1"]),  # and https on 443
    ("http://93.184.216.34/", []),  # public literals: decided only, never fetched
    ("https://93.184.216.34:8443/path?q=1", []),
    ("http://[2606:2800:220:1:248:1893:25c8:1946]/", []),
    ("http://[2002:5db8:d822::1]/", []),  # 6to4 of a public address
]


def _literal(host: object) -> bool:
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text == "localhost":
        return True
    try:
        ipaddress.ip_address(text.strip("[]").split("%")[0])
        return True
    except ValueError:  # inet_aton's decimal, hex and octal spellings resolve locally too
        return all(c in "0123456789abcdefxABCDEFX." for c in text)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """Fail the test if the guard would send a DNS query (only literals and localhost resolve)."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if not _literal(host):
            raise AssertionError(f"check_url tried to resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("url", REFUSED)
def test_refused(url):
    with pytest.raises(URLRefused):
        check_url(url)
    with pytest.raises(URLRefused):  # allow-listing another port opens nothing here either
        check_url(url, allowed_hosts(["127.0.0.1:8888", "localhost:8888"]))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("url,allow", REFUSED_DESPITE_ALLOW)
def test_allow_list_is_per_port(url, allow):
    with pytest.raises(URLRefused):
        check_url(url, allowed_hosts(allow))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("url,allow", ALLOWED)
def test_allowed(url, allow):
    check_url(url, allowed_hosts(allow))


def test_environment_allow_list_is_per_port_too(monkeypatch):
    monkeypatch.setenv("SLEUTH_ALLOW_HOSTS", "127.0.0.1:8888, [::1]:8080")
    check_url("http://127.0.0.1:8888/", allowed_hosts())
    check_url("http://[::1]:8080/", allowed_hosts())
    with pytest.raises(URLRefused):
        check_url("http://127.0.0.1:80/", allowed_hosts())
    with pytest.raises(ValueError):
        allowed_hosts(["127.0.0.1:http"])


def test_is_global_unwraps_embedded_ipv4():
    assert is_global(ipaddress.ip_address("93.184.216.34"))
    assert is_global(ipaddress.ip_address("2002:5db8:d822::"))
    for ip in ("2002:7f00:1::", "2002:0a00:0001::", "64:ff9b::a9fe:a9fe", "100.100.100.200",
               "192.0.0.192", "2001:0:4136:e378:8000:63bf:80ff:fffe"):
        assert not is_global(ipaddress.ip_address(ip)), ip


def test_counts():
    """The README quotes these numbers; keep them in step with the tables above."""
    assert len(REFUSED) + len(REFUSED_DESPITE_ALLOW) == 51 and len(ALLOWED) == 10


def test_web_retriever_allows_its_endpoint_origin_only():
    from tools.retrievers import WebRetriever
    from tools.web import SearxngSearch

    retriever = WebRetriever(SearxngSearch("http://127.0.0.1:8888"))
    check_url("http://127.0.0.1:8888/doc/x", allowed_hosts(retriever.allow_hosts))
    with pytest.raises(URLRefused):  # a result or redirect to another port of the same host
        check_url("http://127.0.0.1:80/internal-admin", allowed_hosts(retriever.allow_hosts))


def test_research_web_url_allows_only_the_endpoint_origin():
    from graph.run import resolve_sources

    (retriever,) = resolve_sources(web="http://127.0.0.1:8888")
    with pytest.raises(URLRefused):
        check_url("http://127.0.0.1:80/internal-admin", allowed_hosts(retriever.allow_hosts))
