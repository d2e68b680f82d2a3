"""The helper validates every request before touching the system."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.helper._protocol import BadRequest, CreateTun, ReadAhead, Routes, parse_request
from tpengine.helper._resolvconf import ResolvConf, nameservers_of, render


def req(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_valid_requests_parse() -> None:
    routes = parse_request(req(op="add_routes", device="tp0", cidrs=["10.96.0.0/12", "fd00::/64"]))
    assert routes == Routes(
        add=True,
        device="tp0",
        cidrs=(ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00::/64")),
    )
    tun = parse_request(req(op="create_tun", name="tp0", mtu=65000, addresses=["198.19.0.1/32"]))
    assert isinstance(tun, CreateTun) and tun.mtu == 65000
    ahead = parse_request(req(op="set_read_ahead", path="/tmp/tpfs-1", kb=2048))
    assert ahead == ReadAhead(path="/tmp/tpfs-1", kb=2048)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not JSON"),
        (req(op="format_disk"), "unknown op"),
        (req(op="add_routes", device="tp0", cidrs=["0.0.0.0/0"]), "too wide"),
        (req(op="add_routes", device="tp0", cidrs=["10.96.0.1/12"]), "not a CIDR"),
        (req(op="add_routes", device="tp0", cidrs=["127.0.0.0/8"]), "loopback"),
        (req(op="add_routes", device="eth0; rm -rf /", cidrs=[]), "invalid device name"),
        (req(op="add_routes", device="tp0", cidrs="10.0.0.0/8"), "must be a list"),
        (req(op="create_tun", name="tp0", mtu=100, addresses=[]), "mtu"),
        (req(op="set_dns", nameservers=[]), "one to three"),
        (req(op="set_dns", nameservers=["dns.example"]), "not an IP"),
        (req(op="unmount", path="../etc"), "absolute"),
        (req(op="unmount", path="/"), "absolute"),
        (req(op="hello", version="1"), "must be a int"),
        (req(op="set_read_ahead", path="/tmp/tpfs-1", kb=1 << 20), "not within 128 to 16384"),
        (req(op="set_read_ahead", path="/tmp/tpfs-1", kb=True), "must be a int"),
        (req(op="set_read_ahead", path="tmp/x", kb=2048), "absolute"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(data)


@given(
    st.binary(max_size=300)
    | st.dictionaries(st.text(max_size=8), st.text(max_size=20)).map(
        lambda d: json.dumps(d).encode()
    )
)
def test_fuzz_only_bad_request_escapes(data: bytes) -> None:
    try:
        parse_request(data)
    except BadRequest:
        pass


def test_resolv_conf_rewritten_in_place_and_restored_exactly(tmp_path: Path) -> None:
    original = b"# from DHCP\nsearch corp.example\nnameserver 192.0.2.53\noptions edns0\n"
    path = tmp_path / "resolv.conf"
    path.write_bytes(original)
    inode = path.stat().st_ino
    resolv = ResolvConf(path, tmp_path / "state")
    resolv.apply([ipaddress.ip_address("198.19.0.2")])
    text = path.read_text()
    assert nameservers_of(text) == ["198.19.0.2"]
    assert "search corp.example" in text and "options edns0" in text
    assert path.stat().st_ino == inode  # in place: a bind mount cannot be renamed over
    resolv.restore()
    assert path.read_bytes() == original


def test_stale_change_from_a_dead_helper_is_restored(tmp_path: Path) -> None:
    original = b"nameserver 192.0.2.53\n"
    path = tmp_path / "resolv.conf"
    path.write_bytes(original)
    ResolvConf(path, tmp_path / "state").apply([ipaddress.ip_address("198.19.0.2")])
    # The helper died here. The next one finds the backup and puts the original back.
    assert ResolvConf(path, tmp_path / "state").restore_stale()
    assert path.read_bytes() == original


def test_render_replaces_only_nameservers() -> None:
    text = render("nameserver 1.1.1.1\nsearch a b\n", [ipaddress.ip_address("10.0.0.1")])
    assert nameservers_of(text) == ["10.0.0.1"]
    assert "search a b" in text
