"""`gojson.marshal` against what Go's `encoding/json.Marshal` wrote for the same values.

Each expected output below was printed by `json.Marshal` in Go 1.19 (the Go era upstream was built
with: before 1.22, which changed `\\b` and `\\f`), run once by hand on the listed Go values; the
Python inputs are the same values as taskrunner holds them (bytes that are not UTF-8 arrive as
`surrogateescape` surrogates)."""

from __future__ import annotations

import pytest

from taskrunner.api.gojson import GoMap, marshal


def undecodable(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("value", "go_output"),
    [
        # json.Marshal("<a href=\"x\">&amp;</a>"): HTML characters escaped
        ('<a href="x">&amp;</a>', rb'"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e"'),
        # json.Marshal("\b\f\n\r\t\x00\x01\x1f\x7f/"): DEL and "/" stay raw
        ("\b\f\n\r\t\x00\x01\x1f\x7f/", b'"\\u0008\\u000c\\n\\r\\t\\u0000\\u0001\\u001f\x7f/"'),
        # json.Marshal("\u2028\u2029")
        ("\u2028\u2029", rb'"\u2028\u2029"'),
        # json.Marshal("a\xffb\xc3("): each byte that is not UTF-8 is one \ufffd
        (undecodable(b"a\xffb\xc3("), rb'"a\ufffdb\ufffd("'),
        # json.Marshal("\xed\xa0\x80"): an encoded surrogate is three bad bytes
        (undecodable(b"\xed\xa0\x80"), rb'"\ufffd\ufffd\ufffd"'),
        ("\ud800", rb'"\ufffd"'),  # a lone surrogate cannot reach Go: it is a bad byte there
        # json.Marshal("报表 é 😀 \ufffd"): all else raw UTF-8
        ("报表 é 😀 \ufffd", '"报表 é 😀 \ufffd"'.encode()),
        # json.Marshal(`back\slash "quote"`)
        ('back\\slash "quote"', rb'"back\\slash \"quote\""'),
    ],
)
def test_strings_escape_as_go(value: str, go_output: bytes) -> None:
    assert marshal(value) == go_output


def test_floats_as_go_1_8_and_later() -> None:
    # json.Marshal([]float64{1e21, 1e20, 1e-6, 1e-7, 1.5, 3.0, 0.1, 123456789.125, 1e-10,
    #   5e-324, 1.7976931348623157e308, 1700000000.25, -2.5e-8, 0})
    values = [1e21, 1e20, 1e-6, 1e-7, 1.5, 3.0, 0.1, 123456789.125, 1e-10, 5e-324,
              1.7976931348623157e308, 1700000000.25, -2.5e-8, 0.0]  # fmt: skip
    assert marshal(values) == (
        b"[1e+21,100000000000000000000,0.000001,1e-7,1.5,3,0.1,123456789.125,1e-10,5e-324,"
        b"1.7976931348623157e+308,1700000000.25,-2.5e-8,0]"
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_floats_go_refuses_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="unsupported value"):
        marshal({"x": value})


def test_maps_sort_keys_by_bytes_and_structs_keep_their_order() -> None:
    # json.Marshal(map[string]int{"b": 1, "a": 2, "B": 3, "é": 4, "z": 5, "报": 6, "": 7})
    go_map = GoMap({"b": 1, "a": 2, "B": 3, "é": 4, "z": 5, "报": 6, "": 7})
    assert marshal(go_map) == '{"":7,"B":3,"a":2,"b":1,"z":5,"é":4,"报":6}'.encode()
    # a struct (a dict here) keeps its declared order
    assert marshal({"z": 1, "a": 2}) == b'{"z":1,"a":2}'
    # json.Marshal(map[string]interface{}{"<k>": []interface{}{nil, true, false, -7}})
    assert (
        marshal(GoMap({"<k>": [None, True, False, -7]}))
        == rb'{"\u003ck\u003e":[null,true,false,-7]}'
    )


def test_upstream_envelopes() -> None:
    # json.Marshal(Response{StatusCode: 500, Message: "channel不存在"}): Failed's shape
    failed = {"status_code": 500, "message": "channel不存在", "data": None}
    assert marshal(failed) == '{"status_code":500,"message":"channel不存在","data":null}'.encode()
    # Success(struct{TaskName, Result}{"date", true}) and Success([]int{})
    ok = {"status_code": 200, "message": "ok", "data": {"task_name": "date", "result": True}}
    assert marshal(ok) == (
        b'{"status_code":200,"message":"ok","data":{"task_name":"date","result":true}}'
    )
    assert marshal({"status_code": 200, "message": "ok", "data": []}) == (
        b'{"status_code":200,"message":"ok","data":[]}'
    )


@pytest.mark.parametrize("value", [b"raw", object(), {1: "int key"}])
def test_values_go_would_write_otherwise_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="gojson"):
        marshal(value)
