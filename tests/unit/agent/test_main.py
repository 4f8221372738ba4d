"""``dpustack-agent`` refuses a bad config with one readable line and exit status 2."""

from dpustack.agent.main import main


def test_a_bad_config_file_stops_the_agent_with_a_message_naming_the_field(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text('insecure = true\n[controller]\nurl = "ftp://nope"\ntoken = "t"\n[api]\ncontroller_credential_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"\n')

    assert main(["--config", str(config)]) == 2

    assert f"dpustack-agent: {config}: controller.url:" in capsys.readouterr().err


def test_an_unknown_driver_stops_the_agent_listing_what_is_installed(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path}"\ninsecure = true\n[controller]\nurl = "http://c"\ntoken = "t"\n'
                      '[api]\ncontroller_credential_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"\n[drivers]\nswitch = "vendorx"\n')

    assert main(["--config", str(config)]) == 2

    assert "no switch driver named 'vendorx' (installed: memory, ovs)" in capsys.readouterr().err
