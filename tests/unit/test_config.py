from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pycri import config


def test_default_file_round_trips() -> None:
    text = config.render_default()
    assert config.from_dict(tomllib.loads(text)) == config.Config()
    for key in ("root_dir", "state_dir", "socket", "image_socket", "conmon", "infra_command", "cgroup_driver", "log_level"):
        assert f"\n{key} = " in text
    for table in ("[runtimes.runc]", "[runtimes.crun]", "[cni]", "[images]", "[streaming]"):
        assert table in text


def test_layer_limits_are_documented_with_their_defaults() -> None:
    text = config.render_default()
    assert "\nmax_layer_unpacked_bytes = 68719476736\n" in text
    assert "\nmax_layer_entries = 2000000\n" in text
    block = text[text.index("[images]") :]
    for key in ("max_layer_unpacked_bytes", "max_layer_entries"):
        help_line = block[: block.index(f"\n{key} = ")].rsplit("\n", 1)[1]
        assert help_line.startswith("# ")
        assert "layer" in help_line
    cfg = config.from_dict({"images": {"max_layer_unpacked_bytes": 1 << 30, "max_layer_entries": 1000}})
    assert (cfg.images.max_layer_unpacked_bytes, cfg.images.max_layer_entries) == (1 << 30, 1000)


def test_missing_default_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert config.load(None) == config.Config()


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="configuration file not found"):
        config.load(tmp_path / "absent.toml")


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('log_level = "debug"\n[cni]\nconf_dir = "/x/net.d"\n')
    cfg = config.load(path)
    assert cfg.log_level == "debug"
    assert cfg.cni.conf_dir == "/x/net.d"
    assert cfg.cni.bin_dirs == config.CNIConfig().bin_dirs
    assert set(cfg.runtimes) == {"runc", "crun"}


def test_rendered_custom_config_reads_back() -> None:
    cfg = config.from_dict({"runtimes": {"kata": {"path": "/usr/bin/kata", "root": "/run/k"}}, "default_runtime": "kata"})
    assert config.from_dict(tomllib.loads(config.render(cfg))) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sockets": "/x"}, r"sockets: unknown key"),
        ({"cni": {"confdir": "/x"}}, r"cni.confdir: unknown key"),
        ({"log_level": 3}, r"log_level: expected a string, got int"),
        ({"streaming": {"port": "80"}}, r"streaming.port: expected an integer, got str"),
        ({"streaming": {"port": True}}, r"streaming.port: expected an integer, got bool"),
        ({"streaming": {"port": 70000}}, r"streaming.port: must be between 0 and 65535"),
        ({"cni": {"bin_dirs": "/usr/lib/cni"}}, r"cni.bin_dirs: expected a list"),
        ({"cni": {"bin_dirs": ["relative"]}}, r"cni.bin_dirs\[0\]: must be an absolute path"),
        ({"log_level": "chatty"}, r"log_level: must be one of"),
        ({"log_format": "xml"}, r"log_format: must be one of"),
        ({"cgroup_driver": "systemd"}, r"cgroup_driver: 'systemd' is not supported yet"),
        ({"cgroup_driver": "other"}, r"cgroup_driver: must be one of"),
        ({"default_runtime": "kata"}, r"default_runtime: 'kata' is not one of runtimes"),
        ({"runtimes": {}}, r"runtimes: at least one"),
        ({"runtimes": {"runc": {"path": "/usr/sbin/runc"}}}, r"runtimes.runc.root: required key is missing"),
        ({"runtimes": {"bad name": {"path": "/a", "root": "/b"}}}, r"runtimes.bad name: handler names"),
        ({"socket": "run/pycri.sock"}, r"socket: must be an absolute path"),
        ({"image_socket": "/run/pycri/pycri.sock"}, r"image_socket: must differ from socket"),
        ({"infra_command": []}, r"infra_command: must name a program"),
        ({"images": {"max_concurrent_downloads": 0}}, r"images.max_concurrent_downloads"),
        ({"images": {"max_layer_unpacked_bytes": 0}}, r"images.max_layer_unpacked_bytes: must be at least 1"),
        ({"images": {"max_layer_entries": -1}}, r"images.max_layer_entries: must be at least 1"),
    ],
)
def test_invalid_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.from_dict(data)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("root_dir = \n")
    with pytest.raises(config.ConfigError, match=r"bad.toml: not valid TOML"):
        config.load(path)


def test_file_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[images]\npinned = "x"\n')
    with pytest.raises(config.ConfigError, match=r"c.toml: images.pinned: expected a list"):
        config.load(path)


def test_changes_lists_every_changed_key() -> None:
    old = config.Config()
    new = config.from_dict({"log_level": "debug", "cni": {"conf_dir": "/x"}, "streaming": {"port": 10010}})
    assert config.changes(old, new) == [
        ("cni.conf_dir", "/etc/cni/net.d", "/x"),
        ("log_level", "info", "debug"),
        ("streaming.port", 0, 10010),
    ]
    assert config.changes(old, config.Config()) == []


def test_apply_reloadable_changes_only_the_reloadable_keys_in_place() -> None:
    live = config.Config()
    images = live.images
    new = config.from_dict(
        {
            "log_level": "debug",
            "socket": "/tmp/other.sock",
            "images": {"registries_conf": "/etc/r.conf", "auth_file": "/etc/auth.json"},
            "cni": {"conf_dir": "/etc/cni/other"},
        }
    )
    applied, later = config.apply_reloadable(live, new)
    assert applied == [
        ("cni.conf_dir", "/etc/cni/net.d", "/etc/cni/other"),
        ("images.auth_file", "", "/etc/auth.json"),
        ("images.registries_conf", "/etc/containers/registries.conf", "/etc/r.conf"),
        ("log_level", "info", "debug"),
    ]
    assert later == ["socket"]
    assert live.socket == "/run/pycri/pycri.sock"
    assert live.log_level == "debug"
    assert live.images is images  # the object every service holds sees the change
    assert images.registries_conf == "/etc/r.conf"
    assert live.cni.conf_dir == "/etc/cni/other"
    assert set(config.RELOADABLE) == {key for key, _, _ in applied}
