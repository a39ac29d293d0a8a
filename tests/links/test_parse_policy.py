"""Link files as browsers and phones save them, and which addresses may be fetched."""
from __future__ import annotations

import plistlib
import socket
from pathlib import Path

import pytest

from stemd.errors import LinkError
from stemd.links.guard import ConnectRefused, guarded
from stemd.links.parse import is_link_file, read_links
from stemd.links.policy import UrlPolicy, check_url

from .linkserver import LinkServer


def test_windows_internet_shortcut(tmp_path: Path) -> None:
    path = tmp_path / "Song.url"
    path.write_bytes(b"\xef\xbb\xbf[InternetShortcut]\r\nIDList=\r\n"
                     b"URL=https://example.com/watch?v=abc&t=1\r\nIconIndex=0\r\n")
    assert read_links(path) == ["https://example.com/watch?v=abc&t=1"]


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY])
def test_macos_webloc_xml_and_binary(tmp_path: Path, fmt: plistlib.PlistFormat) -> None:
    path = tmp_path / "Song.webloc"
    path.write_bytes(plistlib.dumps({"URL": "https://example.com/a.mp3"}, fmt=fmt))
    assert read_links(path) == ["https://example.com/a.mp3"]


def test_text_list_one_link_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tonight.links"
    path.write_text("# set for tonight\nhttps://example.com/1\n\n  https://example.com/2  \n"
                    "a note, not a link\nhttps://example.com/1\nftp://example.com/x\n")
    assert read_links(path) == ["https://example.com/1", "https://example.com/2",
                                "ftp://example.com/x"]


def test_files_without_links_are_refused_with_a_reason(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just some lyrics\n")
    with pytest.raises(LinkError, match="holds no link"):
        read_links(notes)
    shortcut = tmp_path / "bad.url"
    shortcut.write_text("[InternetShortcut]\n")
    with pytest.raises(LinkError, match="no URL= line"):
        read_links(shortcut)
    webloc = tmp_path / "bad.webloc"
    webloc.write_bytes(b"\x00\x01garbage")
    with pytest.raises(LinkError, match="not a macOS web location"):
        read_links(webloc)
    assert is_link_file(Path("A.WEBLOC")) and not is_link_file(Path("a.mp3"))


def fake_dns(table: dict[str, list[str]]):
    return lambda host: table.get(host, [])


def test_only_http_and_https() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/a.mp3", "javascript:alert(1)"):
        with pytest.raises(LinkError, match="not an http"):
            check_url(url, UrlPolicy(), fake_dns({}))
    assert check_url("HTTPS://example.com/a", UrlPolicy(), fake_dns({"example.com": ["93.184.216.34"]}))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/a.mp3", "http://[::1]/a", "http://10.1.2.3/",
                                 "http://192.168.1.20/a", "http://169.254.169.254/latest/",
                                 "http://nas.local/a", "http://0.0.0.0/"])
def test_local_network_is_refused_unless_allowed(url: str) -> None:
    dns = fake_dns({"nas.local": ["192.168.1.5"]})
    with pytest.raises(LinkError, match="local network") as caught:
        check_url(url, UrlPolicy(), dns)
    assert "allow_private" in caught.value.hint
    assert check_url(url, UrlPolicy(allow_private=True), dns) == url


def test_allowed_hosts_take_subdomains() -> None:
    dns = fake_dns({"www.youtube.com": ["142.250.1.1"], "evil.com": ["1.2.3.4"]})
    policy = UrlPolicy(allowed_hosts=("youtube.com",))
    assert check_url("https://www.youtube.com/watch?v=x", policy, dns)
    with pytest.raises(LinkError, match="not in links.allowed_hosts"):
        check_url("https://evil.com/youtube.com", policy, dns)


def test_a_local_address_listed_in_allowed_hosts_is_allowed_alone() -> None:
    dns = fake_dns({"nas.local": ["192.168.1.5"]})
    listed = UrlPolicy(allowed_hosts=("192.168.1.5", "nas.local"))
    assert check_url("http://192.168.1.5/a.mp3", listed, dns)
    assert check_url("http://nas.local/a.mp3", listed, dns)
    with pytest.raises(LinkError, match="local network"):
        check_url("http://nas.local/a.mp3", UrlPolicy(allowed_hosts=("nas.local",)), dns)
    with pytest.raises(LinkError, match="not in links.allowed_hosts"):
        check_url("http://192.168.1.6/a.mp3", listed, dns)


def test_the_guard_refuses_a_connect_by_name_to_a_local_address(server: LinkServer) -> None:
    """A socket connected by name (resolved inside connect) is checked too."""
    port = server.httpd.server_address[1]
    with pytest.raises(LinkError, match="tried to connect to 127.0.0.1") as caught:
        with guarded(UrlPolicy(), "http://example.com/a"):
            with socket.socket() as sock, pytest.raises(ConnectRefused):
                sock.connect(("localhost", port))
    assert "links.allowed_hosts" in caught.value.hint and server.requests == []
    with socket.socket() as sock:                  # outside a download: not guarded
        sock.connect(("localhost", port))
