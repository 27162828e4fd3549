"""Confound strategies and checks (bids_neurobolt.fmri.confounds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.errors import ConfigError, DataError, ExitCode
from bids_neurobolt.fmri.confounds import (
    CONFOUND_STRATEGIES,
    MOTION6,
    check_confound_matrix,
    select_confounds,
)


@pytest.fixture
def motion_table():
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.standard_normal((50, 6)).cumsum(axis=0), columns=list(MOTION6))
    table["white_matter"] = rng.standard_normal(50)
    table["csf"] = rng.standard_normal(50)
    table["framewise_displacement"] = np.r_[np.nan, np.abs(rng.standard_normal(49))]
    return table


def test_default_strategy_is_the_six_motion_parameters(motion_table):
    conf = select_confounds(motion_table)
    assert conf.names == MOTION6
    assert conf.values.shape == (50, 6)
    assert np.array_equal(conf.values, motion_table[list(MOTION6)].to_numpy())


def test_friston24_is_derived_when_absent(motion_table):
    conf = select_confounds(motion_table, "motion24+wmcsf", source="conf.tsv")
    assert conf.values.shape == (50, 26)
    names = list(conf.names)
    deriv = conf.values[:, names.index("trans_x_derivative1")]
    assert deriv[0] == 0.0
    assert np.allclose(deriv[1:], np.diff(motion_table["trans_x"]))
    square = conf.values[:, names.index("rot_z_derivative1_power2")]
    assert np.allclose(square[1:], np.diff(motion_table["rot_z"]) ** 2)
    assert "trans_x_derivative1" in conf.filled_first_row


def test_fmriprep_first_row_na_in_derivatives_is_filled(motion_table):
    motion_table["trans_x_derivative1"] = np.r_[np.nan, np.diff(motion_table["trans_x"])]
    conf = select_confounds(motion_table, "motion12")
    assert conf.values[0, list(conf.names).index("trans_x_derivative1")] == 0.0


def test_missing_values_in_base_columns_name_the_rows(motion_table):
    motion_table.loc[[3, 17], "rot_y"] = np.nan
    with pytest.raises(
        DataError, match=r"'rot_y' has missing .* 2 row\(s\) \(volumes 3, 17\)"
    ) as info:
        select_confounds(motion_table, source="sub-01_desc-confounds_timeseries.tsv")
    assert info.value.exit_code == ExitCode.DATAERR
    assert "sub-01_desc-confounds_timeseries.tsv" in str(info.value)


def test_missing_columns_are_listed(motion_table):
    with pytest.raises(DataError, match="lacks the column\\(s\\) trans_z, rot_x"):
        select_confounds(motion_table.drop(columns=["trans_z", "rot_x"]))


def test_text_in_a_column_is_an_error(motion_table):
    table = motion_table.astype(object)
    table.loc[5, "trans_y"] = "oops"
    with pytest.raises(DataError, match="not a number"):
        select_confounds(table)


def test_unknown_strategy_lists_known_ones(motion_table):
    with pytest.raises(ConfigError, match="motion24") as info:
        select_confounds(motion_table, "motion7")
    assert info.value.exit_code == ExitCode.USAGE
    assert set(CONFOUND_STRATEGIES) >= {"none", "motion6", "motion24"}
    assert select_confounds(motion_table, "none").values.shape == (50, 0)


def test_confound_matrix_checks_length_and_nan_rows():
    with pytest.raises(DataError, match="40 rows but the BOLD run has 50"):
        check_confound_matrix(np.zeros((40, 2)), 50)
    values = np.zeros((50, 2))
    values[[0, 9], 1] = np.nan
    with pytest.raises(DataError, match=r"2 row\(s\) \(volumes 0, 9\)"):
        check_confound_matrix(values, 50)
