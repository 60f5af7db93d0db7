"""The synthetic population `audit generate` draws records from: accounts, entities, networks.

Accounts of entities across countries, most calling from a few home networks
of their KYC country; some from cloud networks; a few travel; a few (about 3%)
behave like extraction: high volume from many hosting networks in several
countries; a few call from embargoed countries. Each network carries its
pre-rendered JSON, so the generator (authz.audit.gen_audit) only joins text.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

# (asn, organisation) of access networks per country, with the country's share of traffic.
ISPS: dict[str, tuple[float, list[tuple[int, str]]]] = {
    "US": (30, [(7922, "COMCAST-7922"), (701, "UUNET"), (7018, "ATT-INTERNET4")]),
    "DE": (8, [(3320, "Deutsche Telekom AG"), (3209, "Vodafone GmbH")]),
    "GB": (8, [(2856, "British Telecommunications PLC"), (5089, "Virgin Media Limited")]),
    "FR": (6, [(3215, "Orange S.A."), (12322, "Free SAS")]),
    "IN": (8, [(55836, "Reliance Jio Infocomm Limited"), (24560, "Bharti Airtel Ltd.")]),
    "JP": (5, [(2516, "KDDI CORPORATION"), (4713, "NTT Communications Corporation")]),
    "BR": (5, [(28573, "Claro NXT Telecomunicacoes Ltda"), (18881, "TELEFONICA BRASIL S.A")]),
    "CA": (4, [(812, "Rogers Communications Canada Inc."), (577, "Bell Canada")]),
    "NL": (3, [(1136, "KPN B.V."), (33915, "Vodafone Libertel B.V.")]),
    "SG": (3, [(9506, "Singtel Fibre Broadband")]),
    "KR": (3, [(4766, "Korea Telecom")]),
    "AU": (2, [(1221, "Telstra Limited")]),
    "CN": (4, [(4134, "CHINANET-BACKBONE"), (4837, "CHINA UNICOM China169 Backbone")]),
    "RU": (2, [(12389, "PJSC Rostelecom"), (8359, "MTS PJSC")]),
}
EMBARGOED: dict[str, list[tuple[int, str]]] = {
    "IR": [
        (58224, "Iran Telecommunication Company PJS"),
        (197207, "Mobile Communication Company of Iran PLC"),
    ],
    "KP": [(131279, "Ryugyong-dong")],
    "SY": [(29256, "Syrian Telecom")],
    "CU": [(27725, "Empresa de Telecomunicaciones de Cuba, S.A.")],
}
HOSTING: list[tuple[int, str]] = [
    (16509, "AMAZON-02"),
    (14061, "DIGITALOCEAN-ASN"),
    (16276, "OVH SAS"),
    (24940, "Hetzner Online GmbH"),
    (9009, "M247 Europe SRL"),
    (396982, "GOOGLE-CLOUD-PLATFORM"),
]
HOSTING_COUNTRIES = ("US", "DE", "NL", "SG", "FR", "GB", "JP")
TIERS = (("free", 40), ("pro", 45), ("enterprise", 15))


@dataclass(frozen=True, slots=True)
class Network:
    """A /24 (or /48) clients call from, with what the GeoIP and ASN databases say of it.

    `head`, `mid` and `cc` are its pre-rendered JSON: from "address_kind" to the
    client_ip's host part, then client_network, then country.
    """

    cidr: str
    country: str
    v6: bool
    head: str
    mid: str
    cc: str


@dataclass(frozen=True, slots=True)
class Account:
    """A synthetic account, how it behaves, and its pre-rendered JSON fields."""

    name: str
    entity: str
    tier: str
    kyc: str
    kyc_country: str
    profile: str  # normal, cloud, traveller, extractor, embargoed
    home: tuple[Network, ...]
    away: tuple[Network, ...]  # networks of other countries it sometimes calls from
    away_share: float
    ident: str  # "key_id":…,"kyc":…,"kyc_country":…,

    @property
    def mismatch(self) -> bool:
        """Whether calls from outside its KYC country raise the kyc-mismatch flag."""
        return self.kyc == "unverified"


class Population:
    """Accounts, entities and networks drawn from one seed."""

    def __init__(self, rng: random.Random, accounts: int) -> None:
        self.rng = rng
        self._nets: set[str] = set()
        countries = list(ISPS)
        country_w = [ISPS[c][0] for c in countries]
        self.accounts: list[Account] = []
        weights: list[float] = []
        entity_left, entity, k = 0, "", 0
        for i in range(accounts):
            if entity_left == 0:  # an entity owns one to four accounts
                entity_left, k = rng.choice((1, 1, 1, 2, 2, 3, 4)), 0
                entity = f"{rng.choice(_WORDS)}-{rng.choice(_SUFFIXES)}-{i:04d}"
            entity_left, k = entity_left - 1, k + 1
            tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
            kyc = "unverified" if tier == "free" and rng.random() < 0.7 else "verified"
            home_cc = rng.choices(countries, country_w)[0]
            profile = rng.choices(
                ("normal", "cloud", "traveller", "extractor", "embargoed"), (82, 7, 6, 3, 2)
            )[0]
            home = tuple(self._isp_net(home_cc) for _ in range(rng.randint(1, 3)))
            away: tuple[Network, ...] = ()
            away_share, weight = 0.0, min(rng.paretovariate(1.2), 200.0)
            if profile == "cloud":
                home = tuple(self._hosting_net(home_cc) for _ in range(rng.randint(2, 6)))
            elif profile == "traveller":
                away = tuple(self._isp_net(rng.choice(countries)) for _ in range(rng.randint(1, 3)))
                away_share = 0.25
            elif profile == "extractor":
                spread = rng.sample(HOSTING_COUNTRIES, rng.randint(3, 6))
                away = tuple(
                    self._hosting_net(rng.choice(spread)) for _ in range(rng.randint(30, 150))
                )
                away_share, weight = 0.9, weight * 30 + 50
                kyc = "unverified" if rng.random() < 0.6 else kyc
            elif profile == "embargoed":
                cc = rng.choice(list(EMBARGOED))
                away = tuple(self._embargoed_net(cc) for _ in range(rng.randint(1, 4)))
                away_share = 0.8
            name = entity if k == 1 else f"{entity}-{_TEAMS[k]}"
            key_id = f"k_{i:05d}_{rng.getrandbits(24):06x}"
            ident = f'"key_id":"{key_id}","kyc":"{kyc}","kyc_country":"{home_cc}",'
            self.accounts.append(
                Account(name, entity, tier, kyc, home_cc, profile, home, away, away_share, ident)
            )
            weights.append(weight)
        total = 0.0
        self.cum_weights = []
        for w in weights:
            total += w
            self.cum_weights.append(total)
        self.anonymous = tuple(
            self._isp_net(rng.choices(countries, country_w)[0]) for _ in range(50)
        ) + tuple(self._hosting_net(rng.choice(HOSTING_COUNTRIES)) for _ in range(50))

    def _network(self, country: str, asn: int, org: str) -> Network:
        rng = self.rng
        while True:
            if rng.random() < 0.1:
                groups = (
                    0x2001 + rng.randrange(0x1000),
                    rng.randrange(0x10000),
                    rng.randrange(0x10000),
                )
                head = "{:x}:{:x}:{:x}".format(*groups)
                cidr, prefix, v6 = f"{head}::/48", f"{head}::", True
            else:
                a = rng.choice(_FIRST_OCTETS)
                b, c = rng.randrange(256), rng.randrange(256)
                cidr, prefix, v6 = f"{a}.{b}.{c}.0/24", f"{a}.{b}.{c}.", False
            if cidr not in self._nets:
                self._nets.add(cidr)
                break
        head = f'"address_kind":"public","as_org":{json.dumps(org)},"asn":{asn},"client_ip":"'
        mid = f'","client_network":"{cidr}",'
        return Network(cidr, country, v6, head + prefix, mid, f'"country":"{country}",')

    def _isp_net(self, country: str) -> Network:
        asn, org = self.rng.choice(ISPS[country][1])
        return self._network(country, asn, org)

    def _hosting_net(self, country: str) -> Network:
        asn, org = self.rng.choice(HOSTING)
        return self._network(country, asn, org)

    def _embargoed_net(self, country: str) -> Network:
        asn, org = self.rng.choice(EMBARGOED[country])
        return self._network(country, asn, org)


_WORDS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
          "cyberdyne", "soylent", "aperture", "vandelay", "wonka", "oscorp", "massive", "pied",
          "nakatomi")  # fmt: skip
_SUFFIXES = ("labs", "ai", "research", "corp", "dev", "data", "systems", "io")
_TEAMS = ("", "", "eval", "batch", "ml")  # the first account is named after its entity
_FIRST_OCTETS = tuple(
    a for a in range(1, 224) if a not in {10, 100, 127, 169, 172, 192, 198, 203}
)  # public-looking
