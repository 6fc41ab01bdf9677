"""Settings from the environment: a malformed value stops start-up naming its variable."""

from __future__ import annotations

import pytest

from dcc.settings import Settings


def test_numbers_are_read_and_blank_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCC_MAX_GPUS_PER_WORKER", " 4 ")
    monkeypatch.setenv("DCC_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("DCC_MAX_ATTEMPTS", "")
    s = Settings.from_env()
    assert (s.max_gpus_per_worker, s.lease_seconds, s.max_attempts) == (4, 12.5, Settings().max_attempts)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("DCC_MAX_GPUS_PER_WORKER", "abc", "must be a whole number"), ("DCC_MAX_GPUS_PER_WORKER", "-1", "0 or more"),
    ("DCC_MAX_ATTEMPTS", "2.5", "must be a whole number"), ("DCC_LEASE_SECONDS", "soon", "must be a number"),
    ("DCC_WAIT_SECONDS", "inf", "finite"), ("DCC_LEASE_SECONDS", "nan", "finite"),
])
def test_a_malformed_number_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                               says: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name) as raised:
        Settings.from_env()
    assert says in str(raised.value)
