"""Pipeline strings: parse, canonical print, errors naming the valid choices."""
from dataclasses import dataclass
from typing import Literal

import pytest

from tinyc.errors import ParseError
from tinyc.passes import PASSES, Pass, option, parse_pipeline, print_pipeline, register


@pytest.fixture
def dummy_pass():
    @register
    @dataclass(frozen=True)
    class Dummy(Pass):
        """A pass for testing option parsing."""

        name = "test-dummy"
        ratio: float | str = option(0.5, "a float or 'auto'")
        count: int = option(3, "an int")
        criterion: Literal["l1", "l2"] = option("l1", "a choice")
        global_: bool = option(False, "a flag")
        layers: tuple[str, ...] = option((), "a list")

    yield Dummy
    del PASSES["test-dummy"]


def test_fuse_round_trips():
    passes = parse_pipeline("fuse")
    assert [p.name for p in passes] == ["fuse"]
    assert print_pipeline(passes) == "fuse"


def test_empty_pipeline_is_no_passes():
    assert parse_pipeline("") == [] and parse_pipeline("  ") == []


def test_options_parse_to_field_types(dummy_pass):
    (p,) = parse_pipeline("test-dummy{ratio=0.25 count=7 criterion=l2 global-=true layers=a,b.c}")
    assert (p.ratio, p.count, p.criterion, p.global_, p.layers) == (0.25, 7, "l2", True, ("a", "b.c"))
    (q,) = parse_pipeline("test-dummy{ratio=auto}")
    assert q.ratio == "auto"


def test_canonical_print_drops_defaults_and_orders_by_declaration(dummy_pass):
    text = "fuse , test-dummy{criterion=l2 ratio=0.5 count=4},fuse"
    passes = parse_pipeline(text)
    canonical = print_pipeline(passes)
    assert canonical == "fuse,test-dummy{count=4 criterion=l2},fuse"
    assert print_pipeline(parse_pipeline(canonical)) == canonical


@pytest.mark.parametrize("text, message", [
    ("fuse,nosuch", "unknown pass 'nosuch'"),
    ("test-dummy{bogus=1}", "unknown option 'bogus' for pass 'test-dummy'"),
    ("test-dummy{count=many}", "bad value 'many' for test-dummy{count}"),
    ("test-dummy{criterion=l3}", "bad value 'l3'"),
    ("test-dummy{count}", "needs a value"),
    ("fuse,", "ends with a comma"),
    ("fuse{", "malformed pipeline"),
    ("Fuse", "malformed pipeline"),
])
def test_bad_pipelines_name_the_problem(dummy_pass, text, message):
    with pytest.raises(ParseError) as e:
        parse_pipeline(text)
    assert message in e.value.format()


def test_unknown_pass_lists_valid_names():
    with pytest.raises(ParseError) as e:
        parse_pipeline("fsue")
    assert "fuse" in e.value.hint


def test_unknown_option_lists_valid_options(dummy_pass):
    with pytest.raises(ParseError) as e:
        parse_pipeline("test-dummy{rato=1}")
    assert "ratio" in e.value.hint and "criterion" in e.value.hint


def test_every_registered_pass_has_doc_and_default_construction():
    for name, cls in PASSES.items():
        assert cls.__doc__ and cls.name == name
        assert cls().spec() == name
