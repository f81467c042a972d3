"""One Typer app per noun. Modules here import only typer and the standard library at top level."""
