"""What ``rj dev`` hands the api service: a port it can serve on, the address participants' links name, and the
participant link key kept in the state directory."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from pydantic import SecretStr

from demo.dev import api_env, by_hand, participant_link_key_file
from demo.staff import describe_outcome
from services.api.links import link_keys
from services.runtime.devstack import free_port
from services.runtime.settings import Settings


def test_the_api_serves_on_the_configured_port_and_links_name_that_address(tmp_path: Path) -> None:
    port = free_port()
    env = api_env(Settings(api_port=port), tmp_path)
    assert env["API_PORT"] == str(port)
    assert env["PUBLIC_BASE_URL"] == f"http://127.0.0.1:{port}"


def test_a_taken_api_port_is_replaced_by_a_free_one_and_the_links_follow_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = api_env(Settings(api_port=port), tmp_path)
    assert env["API_PORT"] != str(port)
    assert env["PUBLIC_BASE_URL"] == f"http://127.0.0.1:{env['API_PORT']}"


def test_a_public_base_url_that_was_set_is_kept(tmp_path: Path) -> None:
    settings = Settings(api_port=free_port(), public_base_url="https://rj.example.org")
    assert api_env(settings, tmp_path)["PUBLIC_BASE_URL"] == "https://rj.example.org"


def test_the_participant_link_key_is_made_once_per_state_dir_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    first = api_env(Settings(api_port=free_port()), tmp_path)["PARTICIPANT_LINK_KEY"]
    again = api_env(Settings(api_port=free_port()), tmp_path)["PARTICIPANT_LINK_KEY"]
    assert first == again, "links made before a restart still open"
    assert stat.S_IMODE(participant_link_key_file(tmp_path).stat().st_mode) == 0o600
    assert len(link_keys(Settings(participant_link_key=SecretStr(first)))[0]) == 32
    assert api_env(Settings(api_port=free_port()), tmp_path / "other")["PARTICIPANT_LINK_KEY"] != first


def test_a_link_key_that_was_set_is_used_and_none_is_written(tmp_path: Path) -> None:
    settings = Settings(api_port=free_port(), participant_link_key=SecretStr("a2V5"))
    assert api_env(settings, tmp_path)["PARTICIPANT_LINK_KEY"] == "a2V5"
    assert not (tmp_path / "participant-link.key").exists()


def test_the_hint_for_using_the_api_by_hand_names_the_address_a_token_and_a_request() -> None:
    hint = by_hand("http://127.0.0.1:8123", running=True)
    assert "rj token --user F-ANN --role facilitator" in hint
    assert 'curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8123/cases' in hint


def test_a_command_outcome_is_shown_with_its_facts_or_the_reason_it_was_rejected() -> None:
    accepted = {"status": "accepted", "facts": [{"event_type": "rj.consent.given"}, {"event_type": "rj.case.ready"}]}
    assert describe_outcome(accepted) == "[green]accepted[/]: rj.case.ready, rj.consent.given"
    rejected = {"status": "rejected", "facts": [], "reason": "the case is not ready [yet]"}
    assert describe_outcome(rejected) == "[yellow]rejected[/]: the case is not ready \\[yet]"


def test_the_console_session_key_is_made_once_per_state_dir_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    from demo.dev import console_session_key_file
    from services.api.console import SessionBox

    first = api_env(Settings(api_port=free_port()), tmp_path)["CONSOLE_SESSION_KEY"]
    assert api_env(Settings(api_port=free_port()), tmp_path)["CONSOLE_SESSION_KEY"] == first, (
        "sessions outlive restarts"
    )
    assert stat.S_IMODE(console_session_key_file(tmp_path).stat().st_mode) == 0o600
    SessionBox.from_settings(Settings(console_session_key=SecretStr(first)))  # a key the console takes
