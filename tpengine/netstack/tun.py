"""The TUN device: open it with virtio-net headers and offloads, configure it with
pyroute2, and move packets in batches under trio.

Theory of operation. ``/dev/net/tun`` + ``TUNSETIFF`` (IFF_TUN | IFF_NO_PI |
IFF_VNET_HDR) makes a layer-3 device whose reads and writes carry one IP packet behind a
10-byte ``virtio_net_hdr`` (linux/Documentation/networking/tuntap.rst). ``TUNSETOFFLOAD``
tells the kernel what the reader can take: with CSUM|TSO4|TSO6 it hands over TCP segments
of up to 64 KB (``gso_type`` TCPV4/TCPV6, ``gso_size`` = MSS, NEEDS_CSUM with a partial
checksum) and accepts the same back, segmenting them itself; USO4|USO6 (Linux 6.2+) does
the same for UDP. Each offload is tried, not assumed, and what the kernel accepted is in
``TunDevice.offloads``. Reads drain the non-blocking fd after one ``wait_readable``: one
scheduling point per batch, not per packet (reference/measurements.md: per-packet
handoff collapses throughput ~25×).

Errors are mapped once, here: opening raises :class:`TunError` with what to do; reads and
writes raise only trio's ``ClosedResourceError`` (after ``aclose``) and
``BrokenResourceError`` (the device went away).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from .pcap import PcapTracer

__all__ = [
    "TunDevice",
    "TunError",
    "TunOffloads",
    "configure_link",
    "create_tun",
    "open_tun",
    "setns_thread",
]

# linux/if_tun.h
TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
TUNGETFEATURES: Final = 0x800454CF
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETVNETHDRSZ: Final = 0x400454D8
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08
TUN_F_USO4: Final = 0x20
TUN_F_USO6: Final = 0x40
CLONE_NEWNET: Final = 0x40000000
IFA_F_NODAD: Final = 0x02  # linux/if_addr.h
RTN_LOCAL: Final = 2  # linux/rtnetlink.h

VNET_HDR_LEN: Final = 10
# Largest read: a 64 KB GSO packet plus its virtio-net header (IPv4 total length and
# IPv6 payload length are 16-bit; BIG TCP is not enabled on a TUN).
READ_SIZE: Final = 65535 + 40 + VNET_HDR_LEN
DEFAULT_MTU: Final = 1500
DEFAULT_TXQUEUELEN: Final = 4096

_IFREQ: Final = struct.Struct("16sH22x")


class TunError(RuntimeError):
    """The TUN device could not be opened or configured; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class TunOffloads:
    """The offloads the kernel accepted for this device (TUNSETOFFLOAD)."""

    csum: bool = False
    tso4: bool = False
    tso6: bool = False
    tso_ecn: bool = False
    uso4: bool = False
    uso6: bool = False

    @property
    def flags(self) -> int:
        return (
            (TUN_F_CSUM if self.csum else 0)
            | (TUN_F_TSO4 if self.tso4 else 0)
            | (TUN_F_TSO6 if self.tso6 else 0)
            | (TUN_F_TSO_ECN if self.tso_ecn else 0)
            | (TUN_F_USO4 if self.uso4 else 0)
            | (TUN_F_USO6 if self.uso6 else 0)
        )

    @classmethod
    def from_flags(cls, flags: int) -> TunOffloads:
        return cls(
            csum=bool(flags & TUN_F_CSUM),
            tso4=bool(flags & TUN_F_TSO4),
            tso6=bool(flags & TUN_F_TSO6),
            tso_ecn=bool(flags & TUN_F_TSO_ECN),
            uso4=bool(flags & TUN_F_USO4),
            uso6=bool(flags & TUN_F_USO6),
        )


def _explain(exc: OSError, what: str) -> TunError:
    hint = {
        errno.ENOENT: "/dev/net/tun is missing: load the tun module (modprobe tun)",
        errno.ENODEV: "the tun driver is not available: load it (modprobe tun)",
        errno.EPERM: "permission denied: run as root or with CAP_NET_ADMIN",
        errno.EACCES: "permission denied: run as root or with CAP_NET_ADMIN",
        errno.EBUSY: "the interface name is taken by another device",
        errno.EEXIST: "the interface name is taken by another device",
        errno.EINVAL: "the kernel refused the request (is the name valid?)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return TunError(f"{what}: {hint}")


def _set_offloads(fd: int, want_uso: bool) -> TunOffloads:
    """Try the richest offload set first and fall back: kernels without USO (< 6.2)
    reject the whole request with EINVAL (drivers/net/tun.c set_offload). TSO_ECN is
    not asked for, so ``gso_type`` never carries the ECN bit."""
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    attempts = [base | TUN_F_USO4 | TUN_F_USO6] if want_uso else []
    attempts += [base, TUN_F_CSUM, 0]
    for flags in attempts:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            continue
        return TunOffloads.from_flags(flags)
    return TunOffloads()


def create_tun(
    name: str = "",
    *,
    vnet_hdr: bool = True,
    offload: bool = True,
    uso: bool = True,
) -> TunDevice:
    """Create a TUN device in the calling thread's network namespace and return it
    (the device lives as long as its fd). ``name`` may be empty or contain ``%d`` (the
    kernel picks). Raises :class:`TunError`."""
    if len(name.encode()) > 15:
        raise TunError(f"interface name {name!r} is longer than 15 bytes")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _explain(exc, "cannot open /dev/net/tun") from None
    try:
        features = struct.unpack("I", fcntl.ioctl(fd, TUNGETFEATURES, b"\0" * 4))[0]
        flags = IFF_TUN | IFF_NO_PI
        if vnet_hdr:
            if not features & IFF_VNET_HDR:
                raise TunError("this kernel's TUN driver has no IFF_VNET_HDR")
            flags |= IFF_VNET_HDR
        ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        real_name = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        offloads = TunOffloads()
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            if offload:
                offloads = _set_offloads(fd, uso)
    except TunError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise _explain(exc, f"cannot create TUN device {name!r}") from None
    return TunDevice(fd, name=real_name, offloads=offloads, vnet_hdr=vnet_hdr)


class TunDevice:
    """An open TUN device. ``fd`` is non-blocking; every read and write carries a
    10-byte virtio-net header when ``vnet_hdr`` (see :mod:`tpengine.wire`)."""

    def __init__(
        self,
        fd: int,
        *,
        name: str,
        offloads: TunOffloads,
        vnet_hdr: bool = True,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self.fd = fd
        self.name = name
        self.offloads = offloads
        self.vnet_hdr = vnet_hdr
        self.mtu = mtu
        self.tracer: PcapTracer | None = None
        self.dropped_writes = 0
        self._closed = False
        os.set_blocking(fd, False)

    @classmethod
    def from_fd(
        cls, fd: int, *, offloads: TunOffloads, vnet_hdr: bool = True, mtu: int = DEFAULT_MTU
    ) -> TunDevice:
        """Wrap a TUN fd made elsewhere (e.g. passed by the privileged helper over
        SCM_RIGHTS); the name is read back with TUNGETIFF."""
        try:
            ifr = fcntl.ioctl(fd, TUNGETIFF, _IFREQ.pack(b"", 0))
        except OSError as exc:
            raise _explain(exc, "not a TUN device fd") from None
        name = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        return cls(fd, name=name, offloads=offloads, vnet_hdr=vnet_hdr, mtu=mtu)

    def __repr__(self) -> str:
        return f"<TunDevice {self.name} fd={self.fd} {self.offloads}>"

    def trace_to(self, path: str | os.PathLike[str] | None) -> None:
        """Record every packet read or written to a pcap file at ``path`` (see
        :mod:`tpengine.netstack.pcap`); ``None`` stops tracing."""
        if self.tracer is not None:
            self.tracer.close()
            self.tracer = None
        if path is not None:
            self.tracer = PcapTracer(path, vnet_hdr=self.vnet_hdr)

    # -- reading ----------------------------------------------------------------------

    def read_batch_nowait(self, max_packets: int = 64) -> list[bytes]:
        """Read up to ``max_packets`` packets without blocking (maybe none)."""
        if self._closed:
            raise trio.ClosedResourceError("TUN device is closed")
        out: list[bytes] = []
        read, fd = os.read, self.fd
        try:
            while len(out) < max_packets:
                out.append(read(fd, READ_SIZE))
        except BlockingIOError:
            pass
        except OSError as exc:
            if not out:
                raise self._map_error(exc) from exc
            # deliver what we have; the error repeats on the next read
        if self.tracer is not None and out:
            self.tracer.read_from_tun(out)
        return out

    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Wait until at least one packet is readable, then drain up to ``max_packets``
        (one scheduling point per batch)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = self.read_batch_nowait(max_packets)
        if batch:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return batch
        while True:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except (OSError, ValueError) as exc:  # fd closed under us
                raise trio.ClosedResourceError("TUN device is closed") from exc
            batch = self.read_batch_nowait(max_packets)
            if batch:
                return batch

    # -- writing ----------------------------------------------------------------------

    def write_nowait(self, packet: bytes | bytearray | memoryview) -> bool:
        """Write one packet if the device takes it now; False when it would block.

        A packet the kernel refuses as malformed (EINVAL: bad virtio header, truncated
        IP) is dropped and counted in ``dropped_writes``, not raised: it is the stack's
        own bug, and one bad packet must not stop the loop."""
        if self._closed:
            raise trio.ClosedResourceError("TUN device is closed")
        try:
            os.write(self.fd, packet)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                self.dropped_writes += 1
                return True
            raise self._map_error(exc) from exc
        if self.tracer is not None:
            self.tracer.written_to_tun((packet,))
        return True

    async def write(self, packet: bytes | bytearray | memoryview) -> None:
        """Write one packet (with its virtio-net header), waiting while the queue is
        full (EAGAIN)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.write_nowait(packet):
            await self._wait_writable()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def write_batch(self, packets: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write packets in order; one scheduling point unless the device pushes back."""
        await trio.lowlevel.checkpoint_if_cancelled()
        for packet in packets:
            while not self.write_nowait(packet):
                await self._wait_writable()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_writable(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self.fd)
        except (OSError, ValueError) as exc:
            raise trio.ClosedResourceError("TUN device is closed") from exc

    def _map_error(self, exc: OSError) -> Exception:
        if self._closed or exc.errno == errno.EBADF:
            return trio.ClosedResourceError("TUN device is closed")
        return trio.BrokenResourceError(f"TUN device {self.name}: {exc.strerror}")

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the fd (a non-persistent TUN device disappears with it)."""
        if self._closed:
            return
        self._closed = True
        if self.tracer is not None:
            self.tracer.close()
            self.tracer = None
        with contextlib.suppress(RuntimeError):  # outside trio (a worker thread): no waiters
            trio.lowlevel.notify_closing(self.fd)
        os.close(self.fd)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


# -- network namespaces and link configuration ------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def setns_thread(netns: str | None) -> Iterator[None]:
    """Run the body with the *calling thread* in network namespace ``netns`` (a name
    under /run/netns, as ``ip netns`` makes), then switch back. setns(2) with
    CLONE_NEWNET affects only the calling thread, so use it in a worker thread
    (``trio.to_thread.run_sync``), never on the trio thread. ``None`` does nothing."""
    if netns is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(f"network namespace {netns!r} not found: {exc.strerror}") from None
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise TunError(f"cannot enter network namespace {netns!r}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen as root
                # A worker thread stuck in another namespace would poison the pool.
                os.abort()
    finally:
        os.close(own)


def configure_link(
    name: str,
    *,
    mtu: int = DEFAULT_MTU,
    addresses: Sequence[str] = (),
    routes: Sequence[str] = (),
    up: bool = True,
    txqueuelen: int = DEFAULT_TXQUEUELEN,
) -> None:
    """Set MTU, queue length, addresses ("10.77.0.1/32", "fd77::1/128"), routes
    ("10.77.0.0/16") via the device, and bring it up, with pyroute2 in the calling
    thread's namespace (wrap in :func:`setns_thread` for another one). Blocking: call
    from a thread.

    ``txqueuelen`` is the ring of packets the kernel queues for the reader: when it is
    full the kernel drops (``ip -s link``: TX dropped) and the sender must recover the
    loss. TUN's default of 500 MTU-sized packets is ~0.4 ms at 1.6 GB/s — one trio
    scheduling hiccup; hence a larger default."""
    from pyroute2 import IPRoute  # heavy import, only where links are configured

    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise TunError(f"no interface {name!r} in this network namespace")
            index = found[0]
            ipr.link("set", index=index, mtu=mtu, txqlen=txqueuelen)
            for address in addresses:
                ip, _, prefix = address.partition("/")
                if ":" in ip:
                    # IFA_F_NODAD: a TUN has no neighbours, and a tentative address (RFC
                    # 4862 §5.4) makes the kernel pick ::1 as source for a while.
                    ipr.addr(
                        "add",
                        index=index,
                        address=ip,
                        prefixlen=int(prefix or 128),
                        flags=IFA_F_NODAD,
                    )
                else:
                    ipr.addr("add", index=index, address=ip, prefixlen=int(prefix or 32))
            if up:
                ipr.link("set", index=index, state="up")
            for route in routes:
                ipr.route("add", dst=route, oif=index)
            if up:
                _wait_until_local(ipr, [a.partition("/")[0] for a in addresses if ":" in a])
    except TunError:
        raise
    except Exception as exc:  # pyroute2's NetlinkError and friends
        raise TunError(f"cannot configure {name}: {exc}") from exc


def _wait_until_local(ipr: Any, addresses: Sequence[str], timeout: float = 2.0) -> None:
    """Wait until each IPv6 address has its local route. Even with IFA_F_NODAD the
    kernel installs it from a workqueue (addrconf_dad_work) after the link comes up;
    until then the address is already used as a source but packets to it are dropped
    (Ip6InAddrErrors) — a handshake answered in that window is lost."""
    deadline = time.monotonic() + timeout
    for address in addresses:
        while ipr.route("get", dst=address)[0]["type"] != RTN_LOCAL:
            if time.monotonic() > deadline:
                raise TunError(f"{address} did not become a local address within {timeout} s")
            time.sleep(0.001)


def _create_and_configure(
    name: str,
    netns: str | None,
    mtu: int,
    addresses: Sequence[str],
    routes: Sequence[str],
    uso: bool,
    offload: bool,
) -> TunDevice:
    with setns_thread(netns):
        tun = create_tun(name, uso=uso, offload=offload)
        try:
            configure_link(tun.name, mtu=mtu, addresses=addresses, routes=routes)
        except BaseException:
            tun.close()
            raise
    tun.mtu = mtu
    return tun


@contextlib.asynccontextmanager
async def open_tun(
    name: str = "tp%d",
    *,
    netns: str | None = None,
    mtu: int = DEFAULT_MTU,
    addresses: Sequence[str] = (),
    routes: Sequence[str] = (),
    uso: bool = True,
    offload: bool = True,
    pcap: str | os.PathLike[str] | None = None,
) -> AsyncIterator[TunDevice]:
    """Create a TUN device with virtio-net headers and every offload the kernel takes,
    inside network namespace ``netns`` (None: ours), configure it and bring it up;
    close it (the device and its routes disappear) on exit. With ``pcap``, trace
    every packet to that file."""
    tun = await trio.to_thread.run_sync(
        _create_and_configure, name, netns, mtu, tuple(addresses), tuple(routes), uso, offload
    )
    try:
        tun.trace_to(pcap)
        yield tun
    finally:
        await tun.aclose()
