"""What a training run costs, from the hourly prices a lab gives in its configuration (`labstack.gpu_hour_price`:
a cloud GPU's rate or its own GPU server's; `labstack.cpu_hour_price`: this CPU machine's). No price is ever
assumed: without one, the report gives times only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from labstack.errors import BadInput

PRICE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,5})\s*$")


@dataclass(frozen=True)
class Price:
    per_hour: float
    currency: str = ""
    setting: str = ""  # where it came from, for the report

    def cost(self, seconds: float) -> float:
        return self.per_hour * seconds / 3600

    def text(self, seconds: float) -> str:
        return money(self.cost(seconds), self.currency)

    def describe(self) -> str:
        return f"{money(self.per_hour, self.currency)} an hour (labstack.{self.setting})"


def money(value: float, currency: str) -> str:
    if value >= 100:
        amount = f"{value:,.0f}"
    elif value >= 0.01:
        amount = f"{value:.2f}"
    else:
        amount = f"{value:.2g}"
    return f"{amount} {currency}".strip()


@dataclass(frozen=True)
class Prices:
    gpu: Price | None = None
    cpu: Price | None = None

    def record(self) -> dict:
        return {
            name: {"per_hour": price.per_hour, "currency": price.currency, "setting": price.setting}
            for name, price in (("gpu", self.gpu), ("cpu", self.cpu))
            if price
        }

    @classmethod
    def from_record(cls, record: dict | None) -> Prices:
        record = record or {}
        return cls(*(Price(**record[name]) if name in record else None for name in ("gpu", "cpu")))


def parse_price(setting: str, value: object) -> Price | None:
    """An hourly price from the configuration: a number and an optional currency code, `2.49` or `2.49 USD`."""
    if value in (None, ""):
        return None
    found = PRICE.match(str(value))
    amount = float(found.group(1)) if found else math.nan
    if not found or not math.isfinite(amount):
        raise BadInput(
            f"labstack.{setting} {str(value)!r}: give a price an hour as a number and an optional currency code, "
            "e.g. 2.49 USD"
        )
    return Price(amount, found.group(2).upper(), setting)


def prices_from(gpu: object, cpu: object) -> Prices:
    return Prices(parse_price("gpu_hour_price", gpu), parse_price("cpu_hour_price", cpu))
