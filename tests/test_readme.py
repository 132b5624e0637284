"""The README stays true: every setting is documented, and CI runs its test command."""

import re
from pathlib import Path

from airbourne import config

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented():
    defaults = config.load(environ={})
    missing = [
        f"{section}.{key}"
        for section, values in defaults.sections.items()
        for key in values
        if key not in config.SERVICE_KEYS and f"{section}.{key}" not in README
        and not re.search(rf"`{section}\.[a-z_]+`, `{section}\.{key}`", README)
    ]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    command = re.search(r"pip install -e '\.\[test\]' && (.+)", README).group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
