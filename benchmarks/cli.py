"""Command-line pieces the benchmark scripts share."""


def config_overrides(unknown, typed=True):
    """``--key=value`` arguments (argparse's unknown ones) -> {key: value}, the values read as YAML (numbers,
    lists, booleans, as RecBole's command line reads them) unless ``typed`` is False; other arguments are
    ignored."""
    pairs = dict(a[2:].split("=", 1) for a in unknown if a.startswith("--") and "=" in a)
    if not typed:
        return pairs
    import yaml

    return {k: yaml.safe_load(v) for k, v in pairs.items()}
