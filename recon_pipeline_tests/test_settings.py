"""Every runbook flag: its default, a valid value, and a bad value named in the error."""

import pytest

from recon_pipeline.settings import FLAGS, ReconSettings, SettingsError, account_env_prefix, database_url

RUNBOOK_DEFAULTS = {
    "ENABLE_RECON_POSITION_PARITY_HEARTBEAT": True,
    "RECON_POSITION_PARITY_CONFIRMATIONS": 3,
    "RECON_POSITION_PARITY_REQUIRE_SUBTAG_ATTRIBUTION": True,
    "RECON_POSITION_PARITY_MAX_NOTIONAL_PCT": 0.5,
    "ENABLE_RECON_WATCHDOG_AUTO_RESUME": True,
    "RECON_WATCHDOG_AUTO_RESUME_MIN_PAUSE_MS": 900000,
    "RECON_WATCHDOG_AUTO_RESUME_CLEAN_CYCLES": 2,
    "RECON_WATCHDOG_AUTO_RESUME_COOLDOWN_MS": 1800000,
    "RECON_POSITION_PARITY_DRY_RUN": False,
    "RECON_EXIT_BACKFILL_REQUIRE_STRONG_ATTRIBUTION": True,
    "RECON_EXIT_BACKFILL_ALLOW_HEURISTIC_MATCH": False,
    "RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES": 5,
    "RECON_POSITION_PARITY_DUST_USD": 1.0,
}


@pytest.mark.parametrize("env_name, default", sorted(RUNBOOK_DEFAULTS.items()))
def test_runbook_defaults(env_name, default):
    settings = ReconSettings.from_env({})
    flag = next(f for f in FLAGS if f.env == env_name)
    assert getattr(settings, flag.attr) == default


@pytest.mark.parametrize(
    "env_name, raw, expected",
    [
        ("RECON_POSITION_PARITY_CONFIRMATIONS", "5", 5),
        ("ENABLE_RECON_POSITION_PARITY_HEARTBEAT", "false", False),
        ("RECON_POSITION_PARITY_DRY_RUN", "TRUE", True),
        ("RECON_POSITION_PARITY_MAX_NOTIONAL_PCT", "0.25", 0.25),
        ("RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES", "0", 0.0),
        ("RECON_WATCHDOG_AUTO_RESUME_MIN_PAUSE_MS", " 60000 ", 60000),
        ("RECON_EXIT_BACKFILL_ALLOW_HEURISTIC_MATCH", "", False),  # empty means default
    ],
)
def test_valid_values(env_name, raw, expected):
    settings = ReconSettings.from_env({env_name: raw})
    flag = next(f for f in FLAGS if f.env == env_name)
    assert getattr(settings, flag.attr) == expected


@pytest.mark.parametrize(
    "env_name, raw, accepted",
    [
        ("RECON_POSITION_PARITY_CONFIRMATIONS", "zero", "an integer >= 1"),
        ("RECON_POSITION_PARITY_CONFIRMATIONS", "0", "an integer >= 1"),
        ("RECON_POSITION_PARITY_CONFIRMATIONS", "2.5", "an integer >= 1"),
        ("RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES", "-1", "a finite number >= 0"),
        ("RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES", "nan", "a finite number >= 0"),
        ("RECON_POSITION_PARITY_MAX_NOTIONAL_PCT", "0", "a finite number > 0"),
        ("RECON_POSITION_PARITY_MAX_NOTIONAL_PCT", "inf", "a finite number > 0"),
        ("RECON_POSITION_PARITY_DUST_USD", "-0.5", "a finite number >= 0"),
        ("ENABLE_RECON_POSITION_PARITY_HEARTBEAT", "maybe", "true/false"),
        ("RECON_WATCHDOG_AUTO_RESUME_COOLDOWN_MS", "-1", "an integer >= 0"),
        ("RECON_WATCHDOG_AUTO_RESUME_CLEAN_CYCLES", "0", "an integer >= 1"),
        ("RECON_SCHEDULE_MINUTE_OF_HOUR", "60", "<= 59"),
    ],
)
def test_bad_value_names_variable_and_range(env_name, raw, accepted):
    with pytest.raises(SettingsError) as err:
        ReconSettings.from_env({env_name: raw})
    message = str(err.value)
    assert env_name in message
    assert repr(raw) in message
    assert accepted in message


def test_overrides_validated_like_env():
    base = ReconSettings.from_env({})
    assert base.with_overrides({"parity_confirmations": 4}).parity_confirmations == 4
    assert base.with_overrides({"RECON_POSITION_PARITY_DRY_RUN": True}).parity_dry_run is True
    assert base.with_overrides({"dry_run": True}).dry_run is True
    with pytest.raises(SettingsError, match="RECON_POSITION_PARITY_CONFIRMATIONS"):
        base.with_overrides({"parity_confirmations": 0})
    with pytest.raises(SettingsError, match="unknown setting"):
        base.with_overrides({"no_such_flag": 1})


def test_every_flag_documented_and_round_trips():
    settings = ReconSettings.from_env({})
    env = settings.as_env()
    assert set(env) == {f.env for f in FLAGS}
    assert ReconSettings.from_env(env) == settings
    assert all(f.doc for f in FLAGS)


@pytest.mark.parametrize(
    "account, prefix",
    [("main", "RECON_EXCHANGE_MAIN_"), ("sub-acct.2", "RECON_EXCHANGE_SUB_ACCT_2_"), ("A b", "RECON_EXCHANGE_A_B_")],
)
def test_account_env_prefix(account, prefix):
    assert account_env_prefix(account) == prefix


def test_database_url_default_and_validation(tmp_path):
    assert database_url({"RECON_HOME": str(tmp_path)}) == f"sqlite:///{tmp_path}/trading.db"
    assert database_url({"RECON_DATABASE_URL": "postgresql://u@h/db"}) == "postgresql://u@h/db"
    with pytest.raises(SettingsError, match="RECON_DATABASE_URL"):
        database_url({"RECON_DATABASE_URL": "not a url"})
