"""How a defense uses the CAFE term: not at all (baseline), with the trained h (CAFE), or with h = 0
(the control). Inside the code it is a ``CafeMode``; files written before the enum keep their
encodings, converted here and nowhere else:

* checkpoint cards (``config.cafe``): ``null`` / ``"cafe"`` / ``"control-h0"`` (``to_card``);
* robustness JSON rows and the app's defense rows (``"cafe"``): ``false`` / ``true`` /
  ``"control-h0"`` (``to_json``, ``from_json``);
* checkpoint file stems: ``defense_adv`` / ``defense_adv-cafe`` / ``defense_adv-control-h0``
  (``suffix``, ``from_suffix``).
"""
from __future__ import annotations

from enum import Enum
from typing import Any


class CafeMode(Enum):
    BASELINE = "baseline"
    CAFE = "cafe"
    CONTROL_H0 = "control-h0"

    @classmethod
    def parse(cls, value: Any) -> CafeMode:
        """A mode from any of its encodings (a ``CafeMode``; a card's None / "cafe" / "control-h0";
        a JSON row's False / True; "none" or "baseline"). ValueError for anything else."""
        if isinstance(value, CafeMode):
            return value
        if value is None or value is False or value in ("none", "baseline"):
            return cls.BASELINE
        if value is True or value == "cafe":
            return cls.CAFE
        if value == "control-h0":
            return cls.CONTROL_H0
        raise ValueError(f"unknown cafe mode {value!r}; known: none, cafe, control-h0")

    @classmethod
    def from_json(cls, value: bool | str) -> CafeMode:
        """The mode of a robustness JSON row's ``"cafe"`` (false / true / "control-h0")."""
        if value is False or value is True or value == "control-h0":
            return cls.parse(value)
        raise ValueError(f"not a robustness JSON cafe value: {value!r} (false, true or \"control-h0\")")

    def to_json(self) -> bool | str:
        """``"cafe"`` of a robustness JSON row: false (baseline), true (CAFE) or "control-h0"."""
        return {CafeMode.BASELINE: False, CafeMode.CAFE: True}.get(self, self.value)

    def to_card(self) -> str | None:
        """``cafe`` of a defense checkpoint's card config: None, "cafe" or "control-h0"."""
        return None if self is CafeMode.BASELINE else self.value

    @property
    def suffix(self) -> str:
        """What the mode adds to a defense checkpoint's stem: "", "-cafe" or "-control-h0"."""
        return "" if self is CafeMode.BASELINE else f"-{self.value}"

    @classmethod
    def from_suffix(cls, suffix: str) -> CafeMode:
        """The mode of a stem's suffix ("", "-cafe", "-control-h0"; the dash is optional)."""
        text = suffix.removeprefix("-")
        return cls.BASELINE if not text else cls.parse(text)

    @property
    def adds_term(self) -> bool:
        """True when training adds the CAFE term (CAFE and the h = 0 control)."""
        return self is not CafeMode.BASELINE

    @classmethod
    def from_flags(cls, cafe: bool, control_h0: bool) -> CafeMode:
        """The mode of the command line's ``--cafe`` / ``--control-h0`` flags (at most one)."""
        if cafe and control_h0:
            raise ValueError("choose --cafe or --control-h0, not both")
        return cls.CAFE if cafe else cls.CONTROL_H0 if control_h0 else cls.BASELINE
