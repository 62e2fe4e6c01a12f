from dataclasses import dataclass, field
from typing import Literal

import pytest

from semcolor.config import ConfigError, config_to_dict, load_config


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    name: str = "x"


@dataclass(frozen=True)
class Outer:
    steps: int
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (128, 352)
    inner: Inner = field(default_factory=Inner)
    address: str | None = None
    flag: bool = False

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_builds_nested_config_and_coerces_int_to_float():
    config = load_config(Outer, {"steps": 3, "inner": {"rate": 1}, "sizes": [64]}, "train")
    assert config == Outer(steps=3, inner=Inner(rate=1.0), sizes=(64,))
    assert isinstance(config.inner.rate, float)
    assert config_to_dict(config) == {
        "steps": 3, "mode": "a", "sizes": [64], "inner": {"rate": 1.0, "name": "x"}, "address": None, "flag": False,
    }


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"steps": 1, "stpes": 2}, "train.stpes"),
        ({"steps": "3"}, "train.steps"),
        ({"steps": True}, "train.steps"),
        ({"steps": 1, "inner": {"rate": "fast"}}, "train.inner.rate"),
        ({"steps": 1, "inner": {"bogus": 1}}, "train.inner.bogus"),
        ({"steps": 1, "mode": "c"}, "train.mode"),
        ({"steps": 1, "sizes": [1, "2"]}, "train.sizes[1]"),
        ({"steps": 1, "flag": "yes"}, "train.flag"),
        ({}, "train.steps"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_rejects_bad_values_naming_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(Outer, mapping, "train")


def test_optional_accepts_none_and_value():
    assert load_config(Outer, {"steps": 1, "address": None}).address is None
    assert load_config(Outer, {"steps": 1, "address": "tcp://x:8786"}).address == "tcp://x:8786"


def test_yaml_scientific_notation_is_a_float():
    """PyYAML (YAML 1.1) reads `1e-3` as the string '1e-3'; a float field takes it as the number."""
    import yaml

    mapping = yaml.safe_load("steps: 1\ninner: {rate: 1e-3}\n")
    assert mapping["inner"]["rate"] == "1e-3"  # what PyYAML gives
    assert load_config(Outer, mapping, "train").inner.rate == 0.001
    for text in ("2E+4", "-5e-1", ".5e2", "1.5e-3"):
        assert load_config(Inner, {"rate": text}).rate == float(text)
    for bad in ("fast", "1e", "nan", "inf", "1_000", "0x10", ""):
        with pytest.raises(ConfigError, match="train.rate"):
            load_config(Inner, {"rate": bad}, "train")
    with pytest.raises(ConfigError, match="train.steps"):  # an integer field still wants an integer
        load_config(Outer, {"steps": "1e3"}, "train")
