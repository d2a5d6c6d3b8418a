"""Hourly prices come from the lab's configuration only, and a bad one is refused in one line."""

from __future__ import annotations

import pytest

from labstack.bench.prices import Prices, money, parse_price, prices_from
from labstack.errors import BadInput
from labstack.settings import from_config


def test_a_price_is_a_number_and_an_optional_currency():
    assert parse_price("gpu_hour_price", "2.49 usd").per_hour == 2.49
    assert parse_price("gpu_hour_price", "2.49 usd").currency == "USD"
    assert parse_price("cpu_hour_price", "0.1").currency == ""
    assert parse_price("cpu_hour_price", "") is None and parse_price("cpu_hour_price", None) is None
    assert prices_from("", "") == Prices()


@pytest.mark.parametrize("value", ["cheap", "-1", "2,49 EUR", "1e400", "USD 2", "2.49 dollars"])
def test_a_price_that_is_not_one_is_refused_naming_the_setting(value):
    with pytest.raises(BadInput, match=r"labstack.gpu_hour_price .*e\.g\. 2\.49 USD"):
        parse_price("gpu_hour_price", value)


def test_yaml_numbers_are_prices_too_and_the_record_reads_back():
    settings = from_config({"gpu_hour_price": 2.5, "cpu_hour_price": "0.12 EUR"}, {})
    prices = prices_from(settings.gpu_hour_price, settings.cpu_hour_price)
    assert prices.gpu.per_hour == 2.5 and prices.cpu.currency == "EUR"
    assert Prices.from_record(prices.record()) == prices
    assert prices.gpu.text(3600 * 3) == "7.50"
    with pytest.raises(BadInput, match="must be text"):
        from_config({"gpu_hour_price": True}, {})


def test_money_keeps_small_amounts_readable():
    assert money(0.0042, "USD") == "0.0042 USD" and money(1234.5, "") == "1,234" and money(0.5, "EUR") == "0.50 EUR"
