"""Instruction validation and (de)serialisation; events and replies."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cruncher.errors import ValidationError
from cruncher.messages import (BANDS, MODES, PSFSUB_ALGORITHMS, SCHEMA_VERSION, Failure,
                               Instruction, InstructionError, Progress, ProductReady, Reply,
                               event_from_json)

VALID = {"files": ["/data/raw/131118/S20131118S0064.fits"], "outdir": "/data/reduced/HD_95086"}


def test_minimal_instruction_gets_defaults_and_a_content_id():
    ins = Instruction.from_json(json.dumps(VALID))
    assert ins.files == tuple(VALID["files"]) and ins.level == "raw" and ins.mode == "spec"
    assert ins.quicklook is False and ins.psfsub == () and ins.schema == SCHEMA_VERSION
    assert ins.id.startswith("i-")
    assert Instruction.from_json(json.dumps(VALID)).id == ins.id
    other = Instruction.from_json(json.dumps({**VALID, "quicklook": True}))
    assert other.id != ins.id


def test_round_trip_keeps_everything():
    ins = Instruction(files=("/a/1.fits", "/a/2.fits"), outdir="/out", level="cube", mode="spec",
                      quicklook=True, psfsub=("cadi", "klip"), priority=5, target="HD 95086",
                      band="H", params={"numbasis": [1, 10], "note": "x"}, force=True, id="seq-1")
    back = Instruction.from_json(ins.to_json())
    assert back == ins and back.id == "seq-1" and back.params == {"numbasis": [1, 10], "note": "x"}


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"files": "/a.fits"}, "files"),
    ({"files": []}, "files"),
    ({"files": ["relative/S1.fits"]}, "files"),
    ({"files": ["/a.fits", "/a.fits"]}, "files"),
    ({"files": [3]}, "files"),
    ({"outdir": "out"}, "outdir"),
    ({"level": "2d"}, "level"),
    ({"mode": "imaging"}, "mode"),
    ({"quicklook": "yes"}, "quicklook"),
    ({"quicklook": 1}, "quicklook"),
    ({"psfsub": ["loci"]}, "psfsub"),
    ({"psfsub": "cadi"}, "psfsub"),
    ({"priority": True}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": 10**12}, "priority"),
    ({"band": "Q"}, "band"),
    ({"target": ""}, "target"),
    ({"params": [1]}, "params"),
    ({"id": "has space"}, "id"),
    ({"schema": SCHEMA_VERSION + 1}, "schema"),
    ({"mode": "cal", "psfsub": ["cadi"]}, "psfsub"),
])
def test_rejections_name_the_field(change, field):
    with pytest.raises(InstructionError) as err:
        Instruction.from_json(json.dumps({**VALID, **change}))
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", "null", '{"files": NaN}', "42",
                                  '{"outdir": "/o"}', b"\xff\xfe", '{"files": ["/a"], '
                                  '"outdir": "/o", "params": {"x": Infinity}}'])
def test_malformed_messages_raise_the_validation_error(text):
    with pytest.raises(InstructionError):
        Instruction.from_json(text)


def test_missing_required_field_is_named():
    with pytest.raises(InstructionError) as err:
        Instruction.from_json('{"outdir": "/o"}')
    assert err.value.field == "files"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                       max_size=4),
    max_leaves=20)
field_names = st.sampled_from(["files", "outdir", "level", "mode", "quicklook", "psfsub",
                               "priority", "target", "band", "params", "force", "id", "schema"])
near_valid = st.fixed_dictionaries(
    {"files": st.one_of(st.just(VALID["files"]), json_values), "outdir": st.just("/out")},
    optional={name: json_values for name in ("level", "mode", "quicklook", "psfsub", "priority",
                                             "band", "params", "id", "schema")})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, near_valid, st.dictionaries(field_names, json_values)))
def test_any_json_value_gives_an_instruction_or_the_validation_error(value):
    text = json.dumps(value)
    try:
        ins = Instruction.from_json(text)
    except InstructionError as exc:
        assert exc.field
        return
    assert Instruction.from_json(ins.to_json()) == ins


@settings(max_examples=200, deadline=None)
@given(st.text() | st.binary())
def test_any_text_gives_an_instruction_or_the_validation_error(text):
    try:
        Instruction.from_json(text)
    except InstructionError:
        pass


valid_instructions = st.builds(
    Instruction,
    files=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)
                   .map(lambda s: "/" + s), min_size=1, max_size=5, unique=True).map(tuple),
    outdir=st.just("/out"), level=st.sampled_from(["raw", "cube"]),
    mode=st.sampled_from([m for m in MODES if m != "cal"]), quicklook=st.booleans(),
    psfsub=st.lists(st.sampled_from(PSFSUB_ALGORITHMS), unique=True).map(tuple),
    priority=st.integers(-1000, 1000), band=st.none() | st.sampled_from(BANDS),
    params=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))


@settings(max_examples=200, deadline=None)
@given(valid_instructions)
def test_valid_instructions_round_trip_exactly(ins):
    back = Instruction.from_json(ins.to_json())
    assert back == ins and back.id == ins.id


def test_events_round_trip():
    for event in (Progress(job_id="j1", stage="drp", done=3, total=40, message="cube"),
                  ProductReady(job_id="j2", kind="klip_general", path="/r/x.fits",
                               target="HD 95086", band="H", inputs=("/raw/a.fits",),
                               extras={"snr": 7.5}),
                  Failure(job_id="j3", stage="psfsub", reason="boom", retryable=True,
                          files=("/a",), sequence="s1")):
        back = event_from_json(event.to_json())
        assert back == event and type(back) is type(event)
        assert json.loads(event.to_json())["type"] == event.type
    with pytest.raises(ValidationError):
        event_from_json('{"type": "nope", "job_id": "x"}')
    with pytest.raises(ValidationError):
        event_from_json('{"type": "progress", "job_id": "x"}')


def test_reply_round_trip():
    reply = Reply(status="accepted", instruction_id="i-1", job_id="i-1", dropped=("/bad.fits",))
    assert Reply.from_json(reply.to_json()) == reply
    with pytest.raises(ValidationError):
        Reply.from_json('{"status": "maybe"}')
