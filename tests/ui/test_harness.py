"""The browser harness fails loudly, with the install command, when Chromium is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import browser
from tests.support.db import ROOT


def test_a_missing_browser_is_an_error_naming_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM_BINARY", raising=False)
    monkeypatch.delenv("CHROMEDRIVER", raising=False)
    with pytest.raises(browser.BrowserMissing) as caught:
        browser.find_browser()
    message = str(caught.value)
    assert "chromium" in message
    assert "apt-get install -y chromium chromium-driver" in message


def test_ensure_services_names_the_command_when_it_may_not_install(tmp_path: Path) -> None:
    """Not root (a stand-in `id` says uid 1000) and no browser: exit 1 with the command."""
    for tool in ("seq", "sleep", "ls", "sort", "tail", "grep"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
        (tmp_path / tool).symlink_to(found.stdout.strip())
    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    result = subprocess.run(
        ["/bin/bash", str(ROOT / "bin" / "ensure-services"), "--install", "browser"],
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result
    assert "sudo apt-get install -y chromium chromium-driver" in result.stderr
