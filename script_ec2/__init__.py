"""script-ec2: the data-and-model backend of SCRIPT (Smart ChaRging Infrastructure Planning)."""

__version__ = "0.1.0"
