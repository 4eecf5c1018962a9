import pytest

from daskramp import dq


def test_group_flags_fit_in_uint8():
    assert all(v <= 255 for v in dq.GROUP.values())
    assert set(dq.GROUP) == {"GOOD", "DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT",
                             "PERSISTENCE", "AD_FLOOR", "CHARGELOSS"}


def test_bits_are_distinct_powers_of_two():
    vals = [v for v in dq.PIXEL.values() if v]
    assert len(vals) == 32 == len(set(vals))
    assert all(v & (v - 1) == 0 for v in vals)


@pytest.mark.parametrize(
    "value, names",
    [
        (0, {"GOOD"}),
        (65, {"DO_NOT_USE", "AD_FLOOR"}),  # the A/D floor marking of a group (spec 03)
        (2148007937, {"REFERENCE_PIXEL", "NO_GAIN_VALUE", "DO_NOT_USE"}),  # 2^31 + 2^19 + 1 (spec 00)
        (2097152, {"NO_SAT_CHECK"}),
    ],
)
def test_mnemonics_round_trip(value, names):
    assert dq.dqflags_to_mnemonics(value) == names
    assert dq.interpret_bit_flags(names - {"GOOD"}) == value


def test_interpret_string_and_errors():
    assert dq.interpret_bit_flags("DO_NOT_USE, SATURATED") == 3
    with pytest.raises(ValueError, match="unknown DQ flag name 'BOGUS'"):
        dq.interpret_bit_flags("BOGUS")
    with pytest.raises(ValueError, match="32 bits"):
        dq.dqflags_to_mnemonics(1 << 32)


def test_dq_def_table_rows():
    rows = dq.dq_def_table()
    assert len(rows) == 32
    assert (0, 1, "DO_NOT_USE", "do not use") in rows
    assert rows[-1][:3] == (31, 2**31, "REFERENCE_PIXEL")
