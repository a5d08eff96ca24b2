import pytest

from finch.config import load_settings
from finch.errors import ConfigError


def test_layers_defaults_toml_env_cli(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(
        'port = 9000\nupstream_url = "http://toml:1"\nmax_retries = 5\n[prices."my-model"]\ninput = 1.5\n'
    )
    env = {"FINCH_HOME": str(home), "FINCH_UPSTREAM_URL": "http://env:2", "FINCH_MAX_RETRIES": "4"}
    s = load_settings({"max_retries": 1, "host": None}, environ=env)
    assert s.home == home
    assert s.port == 9000  # toml over default
    assert s.upstream_url == "http://env:2"  # env over toml
    assert s.max_retries == 1  # cli over env
    assert s.host == "127.0.0.1"  # None flags fall through to the default
    assert s.prices["my-model"]["input"] == 1.5


def test_api_key_comes_from_anthropic_env_and_is_never_shown(tmp_path):
    s = load_settings({"home": str(tmp_path)}, environ={"ANTHROPIC_API_KEY": "fake-key-1"})
    assert s.api_key == "fake-key-1"
    assert "fake-key-1" not in repr(s)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = 'abc'", "port"),
        ("nonsense = 1", "unknown setting"),
        ("upstream_url = 'ftp://x'", "http"),
        ("port = [", "cannot read"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, toml, message):
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings({"home": str(tmp_path)}, environ={})
