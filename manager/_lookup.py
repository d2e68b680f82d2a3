"""DNS lookups inside the cluster on behalf of clients (A, AAAA, PTR, SRV).

The manager runs in a pod, so the system resolver is the cluster DNS. Names arrive fully
qualified from the engine's resolver (``tpengine.dns``) and are asked as they are, never
through the pod's search list.
"""

from __future__ import annotations

from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

SUPPORTED = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR, dns.rdatatype.SRV}


class ClusterLookup:
    def __init__(
        self, resolver: dns.asyncresolver.Resolver | None = None, *, timeout: float = 3.0
    ) -> None:
        self._resolver = resolver or dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout

    async def lookup(self, fqdn: str, rdtype: int) -> dict[str, Any]:
        """``{"rcode": int, "records": [...], "ttl": int}`` for one name and type."""
        if rdtype not in SUPPORTED:
            return {"rcode": int(dns.rcode.NOTIMP), "records": [], "ttl": 0}
        try:
            name = dns.name.from_text(fqdn)
            answer = await self._resolver.resolve(
                name, dns.rdatatype.RdataType(rdtype), search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return {"rcode": int(dns.rcode.NXDOMAIN), "records": [], "ttl": 0}
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            return {"rcode": int(dns.rcode.SERVFAIL), "records": [], "ttl": 0}
        except dns.exception.DNSException:
            return {"rcode": int(dns.rcode.FORMERR), "records": [], "ttl": 0}
        rrset = answer.rrset
        if rrset is None:
            return {"rcode": int(dns.rcode.NOERROR), "records": [], "ttl": 0}
        return {
            "rcode": int(dns.rcode.NOERROR),
            "records": [rdata.to_text() for rdata in rrset],
            "ttl": int(rrset.ttl),
        }
