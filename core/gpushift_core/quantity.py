"""Kubernetes resource quantities ("500m", "16Gi", "1e3") as exact numbers (pure).

A GPU profile may raise a notebook's CPU and memory while it holds the GPU. The API
server refuses a container whose request is above its limit, and it would refuse it
only after the move had checkpointed and patched: the notebook-controller's StatefulSet
update fails and the pod never comes. The planner compares the quantities itself and
refuses such a move before anything happens.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["QuantityError", "parse_quantity"]

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
# Kubernetes' quantity grammar: a signed decimal, then a binary or decimal SI suffix,
# or an exponent (e/E and an integer).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?$")


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def parse_quantity(text: object) -> Fraction:
    """The quantity's exact value ("500m" -> 1/2, "1Gi" -> 1073741824)."""
    value = str(text).strip() if isinstance(text, (str, int)) and not isinstance(
        text, bool) else None
    match = _QUANTITY.match(value) if value is not None else None
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * Fraction(1024 ** _BINARY[suffix])
    exponent = int(match["exponent"]) if match["exponent"] is not None else _DECIMAL[suffix]
    return number * _power_of_ten(exponent)


def _power_of_ten(exponent: int) -> Fraction:
    return Fraction(10 ** exponent) if exponent >= 0 else Fraction(1, 10 ** -exponent)
