"""Allow ``python -m script_ec2``."""

from script_ec2.cli import entry

entry()
